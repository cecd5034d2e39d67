// Our tc filters in the calling thread's network namespace: classic clsact
// with cls_bpf in direct-action mode, through libbpf's bpf_tc_* (tcx would
// cost an RCU grace period under RTNL per attach). One filter per hook, at
// AMB_TC_HANDLE and AMB_TC_PRIORITY, so ours are found, replaced and
// removed without touching anyone else's. A clsact qdisc is made when
// missing and never deleted: others may share it, and an empty one is
// inert. Call only from a thread inside the pod's netns (netns/netns.h).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/result.h"

namespace ambient::redirect::ebpf {

enum class Hook { Ingress, Egress };
std::string_view hook_name(Hook h);

struct Interface {
  int ifindex = 0;
  std::string name;
  bool loopback = false;
  bool ethernet = false;  // the programs read an Ethernet header: only these get them
  // False when the interface had neither a clsact nor a classic ingress
  // qdisc (whose block libbpf's ingress hook also reaches) as it was
  // listed, so no filter either: nothing there to ask the kernel about.
  bool filter_qdisc = true;
};

// Every interface of the netns, and which have a qdisc that holds filters.
Result<std::vector<Interface>> list_interfaces();

// The id of the program in our filter on that hook; 0 when there is none
// (no clsact qdisc, or no filter at our handle and priority).
Result<uint32_t> attached_program(const Interface& itf, Hook hook);

// Makes the interface's clsact qdisc unless it has one (ours or not).
Result<> ensure_clsact(const Interface& itf);

// Puts `prog_fd` in our filter (the clsact qdisc must exist), replacing in
// one step whatever program it held, so the hook is never without one.
Result<> attach(const Interface& itf, Hook hook, int prog_fd);

// Removes our filter if its program carries one of our names (a filter of
// someone else's at our handle stays); true when one was removed.
Result<bool> detach_ours(const Interface& itf, Hook hook);

// A loaded program's name by id; empty when the id is gone.
std::string program_name_by_id(uint32_t id);

}  // namespace ambient::redirect::ebpf
