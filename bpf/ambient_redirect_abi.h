/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* What the in-pod tc programs (ambient_redirect.bpf.c) and the agent
 * (node-agent/src/redirect/ebpf/) must agree on: the per-instance
 * configuration, the shared maps' keys and values, the counters, and where
 * the programs sit. Plain C, no kernel-internal types, so the same bytes
 * compile for -target bpf (after vmlinux.h) and for the agent. */
#ifndef AMBIENT_REDIRECT_ABI_H
#define AMBIENT_REDIRECT_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Our tc filters: one fixed handle and priority on every hook, so they are
 * found, replaced and detached without touching anyone else's. */
#define AMB_TC_HANDLE 0x539
#define AMB_TC_PRIORITY 1

/* lo is ifindex 1 in every network namespace. */
#define AMB_LO_IFINDEX 1

#define AMB_DNS_NAT_ENTRIES 65536
/* SYNs handed to ztunnel past a TIME_WAIT at once (amb_tw_socks). */
#define AMB_TW_ENTRIES 4096

/* Address families in map keys (not AF_*: those are not in vmlinux.h). */
#define AMB_FAMILY_V4 4
#define AMB_FAMILY_V6 6

/* The configuration of one loaded instance of the programs, in .rodata:
 * the verifier sees constants and drops the branches a variant never
 * takes. The agent loads one instance per distinct value and shares it
 * between the pods that need it. */
struct amb_config {
  __u32 ztunnel_mark; /* ztunnel's SO_MARK (0x539) under mark_mask */
  __u32 inpod_mark;   /* "deliver locally via table 100" (0x111) */
  __u32 mark_mask;    /* 0xfff: only these bits of skb->mark are ours */
  __u16 outbound_port;
  __u16 inbound_port;
  __u16 hbone_port; /* never redirected */
  __u16 dns_port;   /* ztunnel's DNS proxy on 127.0.0.1 and ::1 */
  __u8 dns_capture;
  __u8 ipv6; /* capture IPv6 too; without it IPv6 passes, as with the rules */
  __u8 has_probe_snat_v4;
  __u8 has_probe_snat_v6;
  __be32 probe_snat_v4;    /* kubelet probes come from here: never captured */
  __be32 probe_snat_v6[4]; /* the same, IPv6 */
  __u32 reserved;          /* zero: no padding, so equal configurations are equal bytes */
  /* Which agent loaded this instance (a hash of its node and run dir); the
   * programs never read it. A restarted agent adopts the programs and maps
   * of an earlier one with the same owner, and never another node's that
   * shares the kernel. */
  __u64 owner;
  /* A hash of the object file these programs came from, also never read:
   * with the owner and the rest of this struct it tells a restarted agent
   * that a pinned instance is exactly what loading its own would give on
   * this kernel, so it can take it without loading. */
  __u64 object;
};

/* One counter per decision, in a per-CPU array shared by every instance. */
enum amb_counter {
  AMB_CNT_OUTBOUND = 0,        /* new outbound connection assigned to 15001 */
  AMB_CNT_INBOUND,             /* inbound segment assigned to 15006 */
  AMB_CNT_VIF,                 /* TCP from a virtual interface assigned to 15001 */
  AMB_CNT_DNS_QUERY,           /* DNS packet rewritten to the loopback DNS proxy */
  AMB_CNT_DNS_REPLY,           /* DNS reply's source restored to the resolver's */
  AMB_CNT_LOOPED,              /* egress packet steered back to a local socket */
  AMB_CNT_PASSED,              /* left alone */
  AMB_CNT_DROP_NO_PROXY,       /* fail closed: no ztunnel listener (or not ztunnel's) */
  AMB_CNT_DROP_LOOP,           /* 0x111-marked packet leaving the pod: routing missing */
  AMB_CNT_DROP_NONTRANSPARENT, /* IPv4 outbound to a listener without IP_TRANSPARENT */
  AMB_CNT_DROP_ASSIGN,         /* bpf_sk_assign refused the listener */
  AMB_CNT_DROP_REWRITE,        /* a DNS rewrite failed half way */
  AMB_CNT_TIME_WAIT,           /* SYN reusing a TIME_WAIT tuple: recorded for amb_tw_lookup */
  AMB_CNT_TW_HANDOFF,          /* amb_tw_lookup gave such a SYN to ztunnel's listener */
  AMB_CNT_DROP_TIME_WAIT,      /* such a SYN could not be recorded, or handed over */
  AMB_CNT_MAX
};

/* DNS NAT: the client socket of a redirected query ... */
struct amb_dns_key {
  __u32 addr[4]; /* network order; IPv4 in addr[0] */
  __be16 port;
  __u8 family; /* AMB_FAMILY_* */
  __u8 proto;  /* IPPROTO_UDP or IPPROTO_TCP */
};

/* ... and the resolver it asked, whose address the reply must carry. */
struct amb_dns_orig {
  __u32 addr[4];
  __be16 port;
  __u16 pad;
};

/* A SYN that meets a TIME_WAIT socket of ztunnel's, as the receiving
 * side's listener lookup sees it: remote is the packet's source, local its
 * destination. */
struct amb_tw_key {
  __u32 remote[4]; /* network order; IPv4 in [0] */
  __u32 local[4];
  __be16 remote_port;
  __be16 local_port;
  __u8 family; /* AMB_FAMILY_* */
  __u8 pad[3];
};

#endif /* AMBIENT_REDIRECT_ABI_H */
