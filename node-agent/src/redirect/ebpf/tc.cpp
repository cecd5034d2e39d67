#include "redirect/ebpf/tc.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if_arp.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/tc.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <set>
#include <string_view>

#include "ambient_redirect_abi.h"
#include "lib/unique_fd.h"
#include "redirect/ebpf/programs.h"

namespace ambient::redirect::ebpf {

namespace {

struct SockDeleter {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct CacheDeleter {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};

bpf_tc_hook tc_hook(const Interface& itf, Hook hook) {
  bpf_tc_hook h{};
  h.sz = sizeof h;
  h.ifindex = itf.ifindex;
  h.attach_point = hook == Hook::Ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS;
  return h;
}

bpf_tc_opts our_filter() {
  bpf_tc_opts o{};
  o.sz = sizeof o;
  o.handle = AMB_TC_HANDLE;
  o.priority = AMB_TC_PRIORITY;
  return o;
}

std::string where(const Interface& itf, Hook hook) {
  return itf.name + " " + std::string(hook_name(hook));
}

// libbpf returns -errno.
Error tc_error(const std::string& step, int err) { return sys_error(step, err < 0 ? -err : err); }

}  // namespace

std::string_view hook_name(Hook h) { return h == Hook::Ingress ? "ingress" : "egress"; }

Result<std::vector<Interface>> list_interfaces() {
  std::unique_ptr<nl_sock, SockDeleter> sk(nl_socket_alloc());
  if (!sk) return make_error(Errc::Internal, "nl_socket_alloc failed");
  if (int e = nl_connect(sk.get(), NETLINK_ROUTE); e < 0) {
    return make_error(Errc::Internal, std::string("netlink connect: ") + nl_geterror(e));
  }
  nl_cache* raw = nullptr;
  if (int e = rtnl_link_alloc_cache(sk.get(), AF_UNSPEC, &raw); e < 0) {
    return make_error(Errc::Internal, std::string("list interfaces: ") + nl_geterror(e));
  }
  std::unique_ptr<nl_cache, CacheDeleter> links(raw);
  // One dump answers for every hook of a new pod, which would otherwise
  // cost a query (and a netlink socket in libbpf) each.
  nl_cache* raw_qdiscs = nullptr;
  if (int e = rtnl_qdisc_alloc_cache(sk.get(), &raw_qdiscs); e < 0) {
    return make_error(Errc::Internal, std::string("list qdiscs: ") + nl_geterror(e));
  }
  std::unique_ptr<nl_cache, CacheDeleter> qdiscs(raw_qdiscs);
  std::set<int> with_filters;
  for (nl_object* o = nl_cache_get_first(raw_qdiscs); o; o = nl_cache_get_next(o)) {
    auto* tc = TC_CAST(o);
    const char* kind = rtnl_tc_get_kind(tc);
    if (kind && (std::string_view(kind) == "clsact" || std::string_view(kind) == "ingress")) {
      with_filters.insert(rtnl_tc_get_ifindex(tc));
    }
  }
  std::vector<Interface> out;
  for (nl_object* o = nl_cache_get_first(raw); o; o = nl_cache_get_next(o)) {
    auto* link = reinterpret_cast<rtnl_link*>(o);
    const unsigned type = rtnl_link_get_arptype(link);
    const char* name = rtnl_link_get_name(link);
    out.push_back({.ifindex = rtnl_link_get_ifindex(link),
                   .name = name ? name : "",
                   .loopback = type == ARPHRD_LOOPBACK,
                   .ethernet = type == ARPHRD_ETHER,
                   .filter_qdisc = with_filters.count(rtnl_link_get_ifindex(link)) > 0});
  }
  return out;
}

Result<uint32_t> attached_program(const Interface& itf, Hook hook) {
  if (!itf.filter_qdisc) return 0u;
  const bpf_tc_hook h = tc_hook(itf, hook);
  bpf_tc_opts o = our_filter();
  const int e = bpf_tc_query(&h, &o);
  // EINVAL: no clsact qdisc or no filter chain yet; ENOENT: no filter at
  // our priority. Both mean nothing of ours.
  if (e == -EINVAL || e == -ENOENT) return 0u;
  if (e != 0) return tc_error("query the tc filter on " + where(itf, hook), e);
  return o.prog_id;
}

Result<> ensure_clsact(const Interface& itf) {
  bpf_tc_hook h = tc_hook(itf, Hook::Ingress);
  if (int e = bpf_tc_hook_create(&h); e != 0 && e != -EEXIST) {
    return tc_error("create the clsact qdisc on " + itf.name, e);
  }
  return {};
}

Result<> attach(const Interface& itf, Hook hook, int prog_fd) {
  const bpf_tc_hook h = tc_hook(itf, hook);
  bpf_tc_opts o = our_filter();
  o.prog_fd = prog_fd;
  o.flags = BPF_TC_F_REPLACE;
  if (int e = bpf_tc_attach(&h, &o); e != 0) {
    return tc_error("attach a tc filter on " + where(itf, hook), e);
  }
  return {};
}

std::string program_name_by_id(uint32_t id) {
  UniqueFd fd(bpf_prog_get_fd_by_id(id));
  if (!fd.valid()) return "";
  bpf_prog_info info{};
  uint32_t len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) return "";
  return info.name;
}

Result<bool> detach_ours(const Interface& itf, Hook hook) {
  AMBIENT_ASSIGN_OR_RETURN(uint32_t id, attached_program(itf, hook));
  if (id == 0) return false;
  const std::string name = program_name_by_id(id);
  if (name.rfind(kProgramNamePrefix, 0) != 0) return false;
  const bpf_tc_hook h = tc_hook(itf, hook);
  const bpf_tc_opts o = our_filter();
  const int e = bpf_tc_detach(&h, &o);
  if (e == -ENOENT || e == -EINVAL) return false;  // gone meanwhile
  if (e != 0) return tc_error("detach the tc filter " + name + " from " + where(itf, hook), e);
  return true;
}

}  // namespace ambient::redirect::ebpf
