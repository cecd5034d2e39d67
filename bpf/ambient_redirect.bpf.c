// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* In-pod redirection to ztunnel without netfilter: tc programs inside the
 * pod's network namespace that do what the in-pod iptables rules do
 * (docs/redirection.md#ebpf).
 *
 *   amb_egress      every non-lo interface, egress
 *   amb_ingress     every non-lo interface but virtual ones, ingress
 *   amb_vif_ingress virtual interfaces (istio.io/reroute-virtual-interfaces)
 *   amb_lo_ingress  lo, ingress
 *   amb_tw_lookup   the pod netns's listener lookup (sk_lookup)
 *
 * Outbound TCP is steered to lo and handed to ztunnel's 15001 listener
 * with bpf_sk_assign there; inbound TCP is handed to 15006 at ingress.
 * Replies need no conntrack: a packet that a local socket would receive
 * is steered to lo instead of leaving the pod. DNS is rewritten to
 * ztunnel's loopback DNS proxy and the reply's source rewritten back.
 * Whenever ztunnel's listener is missing the packet is dropped: never a
 * bypass to the app or the network.
 *
 * A SYN that reuses the tuple of a TIME_WAIT socket of ztunnel's cannot be
 * assigned (the kernel refuses a new request beside that TIME_WAIT) and
 * must not be passed to an ordinary lookup (it would reach the app's
 * listener). tc records ztunnel's listener for exactly that tuple and
 * passes the SYN; the kernel ends the TIME_WAIT and asks amb_tw_lookup,
 * which answers with the recorded listener. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ambient_redirect_abi.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Macros of the UAPI headers, which cannot be included next to vmlinux.h. */
#define TC_ACT_UNSPEC (-1)
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define SK_DROP 0
#define SK_PASS 1
#define AF_INET 2
#define AF_INET6 10
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IP_OFFSET_MASK 0x1fff
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10
#define DNS_PORT 53
/* The transparent bit in inet_sock.inet_flags since 6.6; older kernels
 * keep it in a bitfield (inet_sock___old below). */
#define INET_FLAGS_TRANSPARENT_BIT 15
/* A decision still open: the caller goes on with the next check. */
#define NOT_HANDLED (-2)

const volatile struct amb_config amb_cfg = {};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, AMB_CNT_MAX);
  __type(key, __u32);
  __type(value, __u64);
} amb_stats SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, AMB_DNS_NAT_ENTRIES);
  __type(key, struct amb_dns_key);
  __type(value, struct amb_dns_orig);
} amb_dns_nat SEC(".maps");

/* ztunnel's listener for each SYN handed over past a TIME_WAIT, until
 * amb_tw_lookup takes it (an entry also goes when the listener closes). */
struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, AMB_TW_ENTRIES);
  __type(key, struct amb_tw_key);
  __type(value, __u64);
} amb_tw_socks SEC(".maps");

/* Wire headers of our own: vmlinux.h's carry CO-RE relocations, which
 * packet layouts do not need. */
struct ip4_hdr {
  __u8 version_ihl;
  __u8 tos;
  __be16 tot_len;
  __be16 id;
  __be16 frag_off;
  __u8 ttl;
  __u8 protocol;
  __sum16 check;
  __be32 saddr;
  __be32 daddr;
};

struct ip6_hdr {
  __be32 version_class_flow;
  __be16 payload_len;
  __u8 nexthdr;
  __u8 hop_limit;
  __be32 saddr[4];
  __be32 daddr[4];
};

struct inet_sock___old {
  __u8 transparent : 1;
} __attribute__((preserve_access_index));

/* A TCP or UDP packet's addresses and ports as the packet carries them:
 * also the tuple a socket lookup takes to find who would receive it. */
struct pkt {
  struct bpf_sock_tuple t;
  __be16 sport, dport;
  __u32 l4_off;
  __u8 v6;
  __u8 proto;
  __u8 tcp_flags;
};

static __always_inline void count(__u32 counter) {
  __u64* v = bpf_map_lookup_elem(&amb_stats, &counter);
  if (v) *v += 1;
}

/* Leaves the packet to whoever comes next: other filters, then the stack. */
static __always_inline int pass(void) {
  count(AMB_CNT_PASSED);
  return TC_ACT_UNSPEC;
}

static __always_inline int drop(__u32 counter) {
  count(counter);
  return TC_ACT_SHOT;
}

static __always_inline bool mark_is(__u32 mark, __u32 value) {
  return (mark & amb_cfg.mark_mask) == value;
}

static __always_inline bool pure_syn(const struct pkt* p) {
  return p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

/* Fills `p` for a TCP or UDP packet whose ports are in this skb; -1 for
 * anything else (ARP, ICMP, IPv6 extension headers, later fragments). */
static __always_inline int parse(struct __sk_buff* skb, struct pkt* p) {
  if (skb->protocol == bpf_htons(ETH_P_IP)) {
    struct ip4_hdr ip;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip))) return -1;
    __u32 ihl = ip.version_ihl & 0xf;
    if (ihl < 5 || (ip.frag_off & bpf_htons(IP_OFFSET_MASK))) return -1;
    p->v6 = 0;
    p->proto = ip.protocol;
    p->t.ipv4.saddr = ip.saddr;
    p->t.ipv4.daddr = ip.daddr;
    p->l4_off = ETH_HLEN + ihl * 4;
  } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
    struct ip6_hdr ip6;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6))) return -1;
    p->v6 = 1;
    p->proto = ip6.nexthdr;
    __builtin_memcpy(p->t.ipv6.saddr, ip6.saddr, 16);
    __builtin_memcpy(p->t.ipv6.daddr, ip6.daddr, 16);
    p->l4_off = ETH_HLEN + sizeof(ip6);
  } else {
    return -1;
  }
  if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP) return -1;
  __u8 l4[14];  // ports, and for TCP the flags byte at 13
  __u32 want = p->proto == IPPROTO_TCP ? 14 : 4;
  if (want == 14) {
    if (bpf_skb_load_bytes(skb, p->l4_off, l4, 14)) return -1;
    p->tcp_flags = l4[13];
  } else if (bpf_skb_load_bytes(skb, p->l4_off, l4, 4)) {
    return -1;
  }
  __builtin_memcpy(&p->sport, &l4[0], 2);
  __builtin_memcpy(&p->dport, &l4[2], 2);
  if (p->v6) {
    p->t.ipv6.sport = p->sport;
    p->t.ipv6.dport = p->dport;
  } else {
    p->t.ipv4.sport = p->sport;
    p->t.ipv4.dport = p->dport;
  }
  return 0;
}

static __always_inline bool is_loopback(const struct pkt* p, bool dst) {
  if (!p->v6) {
    __be32 a = dst ? p->t.ipv4.daddr : p->t.ipv4.saddr;
    return a == bpf_htonl(0x7f000001);
  }
  const __be32* a = dst ? p->t.ipv6.daddr : p->t.ipv6.saddr;
  return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

/* Whether the packet's source (src) or destination is the kubelet probe
 * SNAT address. */
static __always_inline bool is_probe_snat(const struct pkt* p, bool src) {
  if (!p->v6) {
    __be32 a = src ? p->t.ipv4.saddr : p->t.ipv4.daddr;
    return amb_cfg.has_probe_snat_v4 && a == amb_cfg.probe_snat_v4;
  }
  const __be32* a = src ? p->t.ipv6.saddr : p->t.ipv6.daddr;
  return amb_cfg.has_probe_snat_v6 && a[0] == amb_cfg.probe_snat_v6[0] &&
         a[1] == amb_cfg.probe_snat_v6[1] && a[2] == amb_cfg.probe_snat_v6[2] &&
         a[3] == amb_cfg.probe_snat_v6[3];
}

/* The state of the socket that would receive this packet here (a full
 * socket, a request socket or a TIME_WAIT one), or -1 for none. */
static __always_inline int receiver_state(struct __sk_buff* skb, struct pkt* p) {
  struct bpf_sock* sk =
      p->v6 ? bpf_skc_lookup_tcp(skb, &p->t, sizeof(p->t.ipv6), BPF_F_CURRENT_NETNS, 0)
            : bpf_skc_lookup_tcp(skb, &p->t, sizeof(p->t.ipv4), BPF_F_CURRENT_NETNS, 0);
  if (!sk) return -1;
  int state = sk->state;
  bpf_sk_release(sk);
  return state;
}

/* Who receives a TCP packet here: a connection (the kernel delivers it as
 * it would anyway), nobody (a new connection, or a stray segment), or a
 * TIME_WAIT socket meeting a SYN: a new connection reusing the tuple. */
enum receiver { RCV_NONE, RCV_FLOW, RCV_TIME_WAIT_SYN };

static __always_inline enum receiver receiver_of(struct __sk_buff* skb, struct pkt* p) {
  int state = receiver_state(skb, p);
  if (state < 0 || state == BPF_TCP_LISTEN) return RCV_NONE;
  if (state == BPF_TCP_TIME_WAIT && pure_syn(p)) return RCV_TIME_WAIT_SYN;
  return RCV_FLOW;
}

/* Whether the listener has IP_TRANSPARENT: without it an IPv4 SYN-ACK
 * from the original (non-local) destination has no route and the kernel
 * swallows the SYN silently. */
static __always_inline bool transparent(struct bpf_sock* sk) {
  struct tcp_sock* tp = bpf_skc_to_tcp_sock(sk);
  if (!tp) return false;
  struct inet_sock* inet = &tp->inet_conn.icsk_inet;
  if (bpf_core_field_exists(inet->inet_flags))
    return (inet->inet_flags >> INET_FLAGS_TRANSPARENT_BIT) & 1;
  struct inet_sock___old* old = (void*)inet;
  return BPF_CORE_READ_BITFIELD(old, transparent);
}

/* The key amb_tw_lookup will see for this packet. */
static __always_inline void tw_key(struct amb_tw_key* k, const struct pkt* p) {
  if (p->v6) {
    __builtin_memcpy(k->remote, p->t.ipv6.saddr, 16);
    __builtin_memcpy(k->local, p->t.ipv6.daddr, 16);
    k->family = AMB_FAMILY_V6;
  } else {
    k->remote[0] = p->t.ipv4.saddr;
    k->local[0] = p->t.ipv4.daddr;
    k->family = AMB_FAMILY_V4;
  }
  k->remote_port = p->sport;
  k->local_port = p->dport;
}

/* Hands the packet to ztunnel's listener on `port` (same destination
 * address, so a [::] or wildcard listener). Only a listening socket with
 * ztunnel's mark qualifies; anything else drops the packet. A SYN past a
 * TIME_WAIT (tw) is not assigned but recorded with the listener and
 * passed, for amb_tw_lookup. */
static __always_inline int assign_to_ztunnel(struct __sk_buff* skb, const struct pkt* p, __u16 port,
                                             __u32 counter, bool need_transparent, bool tw) {
  struct bpf_sock_tuple t = p->t;
  struct bpf_sock* sk;
  if (p->v6) {
    t.ipv6.dport = bpf_htons(port);
    sk = bpf_sk_lookup_tcp(skb, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
  } else {
    t.ipv4.dport = bpf_htons(port);
    sk = bpf_sk_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
  }
  if (!sk) return drop(AMB_CNT_DROP_NO_PROXY);
  if (sk->state != BPF_TCP_LISTEN || !mark_is(sk->mark, amb_cfg.ztunnel_mark)) {
    bpf_sk_release(sk);
    return drop(AMB_CNT_DROP_NO_PROXY);
  }
  if (need_transparent && !transparent(sk)) {
    bpf_sk_release(sk);
    return drop(AMB_CNT_DROP_NONTRANSPARENT);
  }
  if (tw) {
    struct amb_tw_key k = {};
    tw_key(&k, p);
    long err = bpf_map_update_elem(&amb_tw_socks, &k, sk, BPF_ANY);
    bpf_sk_release(sk);
    if (err) return drop(AMB_CNT_DROP_TIME_WAIT);
    count(AMB_CNT_TIME_WAIT);
    return TC_ACT_OK;
  }
  long err = bpf_sk_assign(skb, sk, 0);
  bpf_sk_release(sk);
  if (err) return drop(AMB_CNT_DROP_ASSIGN);
  count(counter);
  return TC_ACT_OK;
}

/* Sends an egress packet to lo's ingress with the in-pod mark, whose
 * fwmark rule routes it to table 100's local route: delivered here. lo's
 * MAC is all zeroes; any other destination MAC makes it PACKET_OTHERHOST. */
static __always_inline int loop_to_lo(struct __sk_buff* skb) {
  const __u8 zero_mac[6] = {};
  skb->mark = (skb->mark & ~amb_cfg.mark_mask) | amb_cfg.inpod_mark;
  if (bpf_skb_store_bytes(skb, 0, zero_mac, sizeof(zero_mac), 0)) return TC_ACT_SHOT;
  return bpf_redirect(AMB_LO_IFINDEX, BPF_F_INGRESS);
}

/* Replaces the destination (dst) or source address and port, with the
 * checksum updates that hold for CHECKSUM_PARTIAL (lo, offloaded TCP) and
 * full software checksums alike. A zero UDP checksum (none) stays zero. */
static __always_inline int rewrite(struct __sk_buff* skb, const struct pkt* p, bool dst,
                                   const __u32 addr[4], __be16 port) {
  __u32 csum_off = p->l4_off + (p->proto == IPPROTO_TCP ? 16 : 6);
  __u64 mm0 = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
  __be16 old_port = dst ? p->dport : p->sport;
  if (!p->v6) {
    __be32 old = dst ? p->t.ipv4.daddr : p->t.ipv4.saddr;
    __be32 now = addr[0];
    __u32 addr_off = ETH_HLEN + (dst ? __builtin_offsetof(struct ip4_hdr, daddr)
                                     : __builtin_offsetof(struct ip4_hdr, saddr));
    if (bpf_l4_csum_replace(skb, csum_off, old, now, BPF_F_PSEUDO_HDR | mm0 | 4)) return -1;
    if (bpf_l3_csum_replace(skb, ETH_HLEN + __builtin_offsetof(struct ip4_hdr, check), old, now, 4))
      return -1;
    if (bpf_skb_store_bytes(skb, addr_off, &now, 4, BPF_F_INVALIDATE_HASH)) return -1;
  } else {
    __u32 old[4], now[4];
    __builtin_memcpy(old, dst ? p->t.ipv6.daddr : p->t.ipv6.saddr, 16);
    __builtin_memcpy(now, addr, 16);
    __u32 addr_off = ETH_HLEN + (dst ? __builtin_offsetof(struct ip6_hdr, daddr)
                                     : __builtin_offsetof(struct ip6_hdr, saddr));
    /* One diff for the 16 bytes; IPv6 has no header checksum. */
    __s64 diff = bpf_csum_diff(old, 16, now, 16, 0);
    if (bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | mm0)) return -1;
    if (bpf_skb_store_bytes(skb, addr_off, now, 16, BPF_F_INVALIDATE_HASH)) return -1;
  }
  if (bpf_l4_csum_replace(skb, csum_off, old_port, port, mm0 | 2)) return -1;
  return bpf_skb_store_bytes(skb, p->l4_off + (dst ? 2 : 0), &port, 2, 0) ? -1 : 0;
}

static __always_inline void dns_key(struct amb_dns_key* k, const struct pkt* p,
                                    bool client_is_src) {
  if (p->v6) {
    __builtin_memcpy(k->addr, client_is_src ? p->t.ipv6.saddr : p->t.ipv6.daddr, 16);
  } else {
    k->addr[0] = client_is_src ? p->t.ipv4.saddr : p->t.ipv4.daddr;
  }
  k->port = client_is_src ? p->sport : p->dport;
  k->family = p->v6 ? AMB_FAMILY_V6 : AMB_FAMILY_V4;
  k->proto = p->proto;
}

/* App DNS (udp or tcp to port 53) leaving the pod: rewritten to ztunnel's
 * DNS proxy on 127.0.0.1 or ::1, remembering the resolver for the reply.
 * A TCP segment after the SYN only when its flow was rewritten from the
 * start; anything else (flows from before enrollment) is NOT_HANDLED. */
static __always_inline int dns_out(struct __sk_buff* skb, const struct pkt* p) {
  struct amb_dns_key k = {};
  struct amb_dns_orig o = {};
  dns_key(&k, p, true);
  if (p->v6)
    __builtin_memcpy(o.addr, p->t.ipv6.daddr, 16);
  else
    o.addr[0] = p->t.ipv4.daddr;
  o.port = p->dport;
  if (p->proto == IPPROTO_UDP || pure_syn(p)) {
    bpf_map_update_elem(&amb_dns_nat, &k, &o, BPF_ANY);
  } else {
    struct amb_dns_orig* have = bpf_map_lookup_elem(&amb_dns_nat, &k);
    if (!have || have->port != o.port || have->addr[0] != o.addr[0] || have->addr[1] != o.addr[1] ||
        have->addr[2] != o.addr[2] || have->addr[3] != o.addr[3])
      return NOT_HANDLED;
  }
  __u32 lo[4] = {};
  if (p->v6)
    lo[3] = bpf_htonl(1);
  else
    lo[0] = bpf_htonl(0x7f000001);
  if (rewrite(skb, p, true, lo, bpf_htons(amb_cfg.dns_port))) return drop(AMB_CNT_DROP_REWRITE);
  count(AMB_CNT_DNS_QUERY);
  return loop_to_lo(skb);
}

/* ztunnel's DNS reply to a rewritten query: its source becomes the
 * resolver the app asked, so connected sockets accept it. The kernel's
 * RST (no listener: unmarked) too, so the app sees a refusal. */
static __always_inline int dns_reply(struct __sk_buff* skb, const struct pkt* p) {
  bool rst = p->proto == IPPROTO_TCP && (p->tcp_flags & TCP_FLAG_RST);
  if (!mark_is(skb->mark, amb_cfg.ztunnel_mark) && !rst) return NOT_HANDLED;
  struct amb_dns_key k = {};
  dns_key(&k, p, false);
  struct amb_dns_orig* o = bpf_map_lookup_elem(&amb_dns_nat, &k);
  if (!o) return NOT_HANDLED;
  __u32 addr[4];
  __builtin_memcpy(addr, o->addr, 16);
  if (rewrite(skb, p, false, addr, o->port)) return drop(AMB_CNT_DROP_REWRITE);
  count(AMB_CNT_DNS_REPLY);
  return TC_ACT_OK;
}

/* A rewritten query arriving on lo: only ztunnel's socket may get it, so
 * an app's own socket on the DNS proxy's port receives nothing. A TCP SYN
 * is checked against the listener (sport 0 matches no connection, so the
 * lookup skips a TIME_WAIT the kernel will replace); later segments
 * belong to the connection the SYN made. */
static __always_inline int dns_in(struct __sk_buff* skb, const struct pkt* p) {
  struct bpf_sock_tuple t = p->t;
  struct bpf_sock* sk;
  if (p->proto == IPPROTO_UDP) {
    sk = p->v6 ? bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0)
               : bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
  } else if (pure_syn(p)) {
    if (p->v6) {
      t.ipv6.sport = 0;
      sk = bpf_sk_lookup_tcp(skb, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
    } else {
      t.ipv4.sport = 0;
      sk = bpf_sk_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
    }
  } else {
    return pass();
  }
  if (!sk) return drop(AMB_CNT_DROP_NO_PROXY);
  __u32 mark = sk->mark;
  bpf_sk_release(sk);
  if (!mark_is(mark, amb_cfg.ztunnel_mark)) return drop(AMB_CNT_DROP_NO_PROXY);
  return pass();
}

SEC("tc")
int amb_egress(struct __sk_buff* skb) {
  struct pkt p = {};
  if (parse(skb, &p) || (p.v6 && !amb_cfg.ipv6)) return pass();
  if (mark_is(skb->mark, amb_cfg.ztunnel_mark)) return pass();
  /* Only our own loop sets it, and such a packet must never leave. */
  if (mark_is(skb->mark, amb_cfg.inpod_mark)) return drop(AMB_CNT_DROP_LOOP);
  if (amb_cfg.dns_capture && p.dport == bpf_htons(DNS_PORT)) {
    int r = dns_out(skb, &p);
    if (r != NOT_HANDLED) return r;
  }
  if (p.proto != IPPROTO_TCP || is_probe_snat(&p, false)) return pass();
  /* A local socket that would receive this packet is ztunnel's: the rest
   * of a redirected outbound flow (its socket holds the original
   * destination), or the app's reply on ztunnel's spoofed connection. */
  enum receiver r = receiver_of(skb, &p);
  if (r == RCV_FLOW) {
    count(AMB_CNT_LOOPED);
    return loop_to_lo(skb);
  }
  /* A new connection: lo's program hands it to 15001. Other segments
   * without a local owner belong to flows from before enrollment. */
  if (pure_syn(&p)) return loop_to_lo(skb);
  return pass();
}

SEC("tc")
int amb_lo_ingress(struct __sk_buff* skb) {
  struct pkt p = {};
  if (parse(skb, &p)) return pass();
  if (amb_cfg.dns_capture && p.sport == bpf_htons(amb_cfg.dns_port) && is_loopback(&p, false)) {
    int r = dns_reply(skb, &p);
    if (r != NOT_HANDLED) return r;
  }
  /* Only what amb_egress looped here is ours; the app talking to itself
   * and ztunnel talking to the app are left alone. */
  if (!mark_is(skb->mark, amb_cfg.inpod_mark)) return pass();
  if (amb_cfg.dns_capture && p.dport == bpf_htons(amb_cfg.dns_port) && is_loopback(&p, true))
    return dns_in(skb, &p);
  if (p.proto != IPPROTO_TCP) return pass();
  enum receiver r = receiver_of(skb, &p);
  if (r == RCV_FLOW) return pass();
  if (!pure_syn(&p)) return pass();  // no owner: the kernel answers with a reset
  return assign_to_ztunnel(skb, &p, amb_cfg.outbound_port, AMB_CNT_OUTBOUND, !p.v6,
                           r == RCV_TIME_WAIT_SYN);
}

SEC("tc")
int amb_ingress(struct __sk_buff* skb) {
  struct pkt p = {};
  if (parse(skb, &p) || p.proto != IPPROTO_TCP || (p.v6 && !amb_cfg.ipv6)) return pass();
  if (mark_is(skb->mark, amb_cfg.ztunnel_mark) || is_loopback(&p, true)) return pass();
  if (p.dport == bpf_htons(amb_cfg.hbone_port) || is_probe_snat(&p, true)) return pass();
  enum receiver r = receiver_of(skb, &p);
  if (r == RCV_FLOW) return pass();
  /* Any segment without an owner, not only SYNs (as TPROXY does), so
   * that even a stray ACK never reaches an app listener. */
  return assign_to_ztunnel(skb, &p, amb_cfg.inbound_port, AMB_CNT_INBOUND, false,
                           r == RCV_TIME_WAIT_SYN);
}

SEC("tc")
int amb_vif_ingress(struct __sk_buff* skb) {
  struct pkt p = {};
  if (parse(skb, &p) || p.proto != IPPROTO_TCP || (p.v6 && !amb_cfg.ipv6)) return pass();
  /* The workload behind the interface talks to the world: its flows are
   * delivered here (table 100) whatever their destination. */
  skb->mark = (skb->mark & ~amb_cfg.mark_mask) | amb_cfg.inpod_mark;
  enum receiver r = receiver_of(skb, &p);
  if (r == RCV_FLOW) {
    count(AMB_CNT_LOOPED);
    return TC_ACT_OK;
  }
  return assign_to_ztunnel(skb, &p, amb_cfg.outbound_port, AMB_CNT_VIF, !p.v6,
                           r == RCV_TIME_WAIT_SYN);
}

/* The pod netns's listener lookup, which the kernel runs for a SYN that
 * ended a TIME_WAIT (and for every other lookup it makes: those find no
 * record and go on as usual). A recorded SYN gets ztunnel's listener or
 * nothing: failing here must not fall back to the app's listener. */
SEC("sk_lookup")
int amb_tw_lookup(struct bpf_sk_lookup* ctx) {
  if (ctx->protocol != IPPROTO_TCP) return SK_PASS;
  struct amb_tw_key k = {};
  if (ctx->family == AF_INET) {
    k.family = AMB_FAMILY_V4;
    k.remote[0] = ctx->remote_ip4;
    k.local[0] = ctx->local_ip4;
  } else if (ctx->family == AF_INET6) {
    k.family = AMB_FAMILY_V6;
    k.remote[0] = ctx->remote_ip6[0];
    k.remote[1] = ctx->remote_ip6[1];
    k.remote[2] = ctx->remote_ip6[2];
    k.remote[3] = ctx->remote_ip6[3];
    k.local[0] = ctx->local_ip6[0];
    k.local[1] = ctx->local_ip6[1];
    k.local[2] = ctx->local_ip6[2];
    k.local[3] = ctx->local_ip6[3];
  } else {
    return SK_PASS;
  }
  k.remote_port = ctx->remote_port;
  k.local_port = bpf_htons((__u16)ctx->local_port);
  struct bpf_sock* sk = bpf_map_lookup_elem(&amb_tw_socks, &k);
  if (!sk) return SK_PASS;
  long err = bpf_sk_assign(ctx, sk, 0);
  bpf_sk_release(sk);
  bpf_map_delete_elem(&amb_tw_socks, &k);
  if (err) {
    count(AMB_CNT_DROP_TIME_WAIT);
    return SK_DROP;
  }
  count(AMB_CNT_TW_HANDOFF);
  return SK_PASS;
}
