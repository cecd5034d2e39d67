#include "redirect/inpod_netlink.h"

#include <fcntl.h>
#include <linux/fib_rules.h>
#include <linux/ip.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/link/inet.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <utility>

#include "lib/unique_fd.h"
#include "redirect/backend.h"

namespace ambient::redirect {

namespace {

struct SockDeleter {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct RouteDeleter {
  void operator()(rtnl_route* r) const { rtnl_route_put(r); }
};
struct RuleDeleter {
  void operator()(rtnl_rule* r) const { rtnl_rule_put(r); }
};
struct AddrDeleter {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
struct LinkDeleter {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct CacheDeleter {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
using Sock = std::unique_ptr<nl_sock, SockDeleter>;
using Route = std::unique_ptr<rtnl_route, RouteDeleter>;
using Rule = std::unique_ptr<rtnl_rule, RuleDeleter>;

Error nl_error(const std::string& step, int err) {
  return make_error(Errc::Internal, step + ": " + nl_geterror(err));
}

Result<Sock> connect() {
  Sock sk(nl_socket_alloc());
  if (!sk) return make_error(Errc::Internal, "nl_socket_alloc failed");
  if (int e = nl_connect(sk.get(), NETLINK_ROUTE); e < 0) return nl_error("netlink connect", e);
  return sk;
}

// The AF_* constant libnl takes for an IP family.
int af(IpFamily ip) { return ip == IpFamily::V6 ? AF_INET6 : AF_INET; }

// lo's ifindex in the calling thread's netns. Not if_nametoindex(): when
// its socket cannot be made (EMFILE at the fd limit) glibc's errno names
// whatever it tried last (ENOENT), and the error would hide the cause.
Result<int> loopback_index() {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return sys_error("socket to look up lo");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(s.get(), SIOCGIFINDEX, &ifr) != 0) return sys_error("SIOCGIFINDEX lo");
  return ifr.ifr_ifindex;
}

Result<Route> local_default_route(IpFamily ip) {
  AMBIENT_ASSIGN_OR_RETURN(const int lo, loopback_index());
  Route route(rtnl_route_alloc());
  rtnl_route_set_family(route.get(), static_cast<uint8_t>(af(ip)));
  rtnl_route_set_type(route.get(), RTN_LOCAL);
  rtnl_route_set_table(route.get(), kRouteTable);
  rtnl_route_set_scope(route.get(), RT_SCOPE_HOST);
  rtnl_route_set_protocol(route.get(), RTPROT_BOOT);
  unsigned char zero[16] = {};
  std::unique_ptr<nl_addr, AddrDeleter> dst(
      nl_addr_build(af(ip), zero, ip == IpFamily::V4 ? 4 : 16));
  nl_addr_set_prefixlen(dst.get(), 0);
  rtnl_route_set_dst(route.get(), dst.get());
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  rtnl_route_nh_set_ifindex(nh, lo);
  rtnl_route_add_nexthop(route.get(), nh);  // the route owns nh now
  return route;
}

Rule fwmark_rule(IpFamily ip) {
  Rule rule(rtnl_rule_alloc());
  rtnl_rule_set_family(rule.get(), af(ip));
  rtnl_rule_set_mark(rule.get(), kInpodMark);
  rtnl_rule_set_mask(rule.get(), kInpodMask);
  rtnl_rule_set_prio(rule.get(), kRulePriority);
  rtnl_rule_set_table(rule.get(), kRouteTable);
  rtnl_rule_set_action(rule.get(), FR_ACT_TO_TBL);
  return rule;
}

std::string ip_name(IpFamily ip) { return std::string(ip_family_name(ip)); }

// The IP families that get routing: ipv6 only when wanted and possible.
std::vector<IpFamily> routed_families(bool ipv6) {
  std::vector<IpFamily> ips = {IpFamily::V4};
  if (ipv6 && lo_ipv6_enabled()) ips.push_back(IpFamily::V6);
  return ips;
}

}  // namespace

bool lo_ipv6_enabled() {
  // /proc/sys/net follows the calling thread's netns.
  std::ifstream f("/proc/sys/net/ipv6/conf/lo/disable_ipv6");
  std::string v;
  if (!(f >> v)) return true;  // unreadable: try anyway, as upstream
  return v != "1";
}

namespace {

using Link = std::unique_ptr<rtnl_link, LinkDeleter>;

Result<Link> get_lo(nl_sock* sk) {
  rtnl_link* raw = nullptr;
  if (int e = rtnl_link_get_kernel(sk, 0, "lo", &raw); e < 0) return nl_error("get lo", e);
  return Link(raw);
}

// From a link the kernel described: its IPv4 devconf travels in
// IFLA_AF_SPEC, which libnl parses into the link.
Result<LoIpv4Conf> ipv4_conf_of(rtnl_link* lo) {
  uint32_t accept_local = 0, route_localnet = 0;
  if (int e = rtnl_link_inet_get_conf(lo, IPV4_DEVCONF_ACCEPT_LOCAL, &accept_local); e < 0) {
    return nl_error("read lo's accept_local", e);
  }
  if (int e = rtnl_link_inet_get_conf(lo, IPV4_DEVCONF_ROUTE_LOCALNET, &route_localnet); e < 0) {
    return nl_error("read lo's route_localnet", e);
  }
  return LoIpv4Conf{.accept_local = accept_local != 0, .route_localnet = route_localnet != 0};
}

// Runtimes may run the loopback plugin alongside the chain instead of
// before it (containerd does), so the pod's lo can still be down when we
// run. ztunnel binds 127.0.0.1:15053 in the pod once it has the netns, and
// the table-100 route sends to lo: both need it up. The settings go in
// the same request rather than through /proc/sys, whose files cost a path
// walk each in a netns that has not opened them yet.
Result<> ensure_lo(nl_sock* sk, bool up, const std::optional<LoIpv4Conf>& conf) {
  AMBIENT_ASSIGN_OR_RETURN(Link lo, get_lo(sk));
  Link change(rtnl_link_alloc());
  if (!change) return make_error(Errc::Internal, "rtnl_link_alloc failed");
  bool changed = false;
  bool turned_off = false;
  if (up && (rtnl_link_get_flags(lo.get()) & IFF_UP) == 0) {
    rtnl_link_set_flags(change.get(), IFF_UP);
    changed = true;
  }
  if (conf) {
    AMBIENT_ASSIGN_OR_RETURN(LoIpv4Conf have, ipv4_conf_of(lo.get()));
    if (have != *conf) {
      for (auto [id, value] : {std::pair{IPV4_DEVCONF_ACCEPT_LOCAL, conf->accept_local},
                               std::pair{IPV4_DEVCONF_ROUTE_LOCALNET, conf->route_localnet}}) {
        if (int e = rtnl_link_inet_set_conf(change.get(), id, value ? 1 : 0); e < 0) {
          return nl_error("prepare lo's IPv4 settings", e);
        }
      }
      changed = true;
      turned_off = (have.accept_local && !conf->accept_local) ||
                   (have.route_localnet && !conf->route_localnet);
    }
  }
  if (!changed) return {};
  if (int e = rtnl_link_change(sk, lo.get(), change.get(), 0); e < 0) {
    return nl_error("change lo's state or IPv4 settings", e);
  }
  // A write to either file under /proc/sys that turns it off also drops the
  // netns's cached routes, so none made while it was on outlives it; the
  // netlink path does not, so the flush is asked for here.
  if (turned_off) {
    UniqueFd fd(::open("/proc/sys/net/ipv4/route/flush", O_WRONLY | O_CLOEXEC));
    if (!fd.valid() || ::write(fd.get(), "1", 1) != 1) {
      return sys_error("flush the pod's cached IPv4 routes");
    }
  }
  return {};
}

}  // namespace

Result<LoIpv4Conf> read_lo_ipv4_conf() {
  AMBIENT_ASSIGN_OR_RETURN(Sock sk, connect());
  AMBIENT_ASSIGN_OR_RETURN(Link lo, get_lo(sk.get()));
  return ipv4_conf_of(lo.get());
}

Result<> set_lo_ipv4_conf(const LoIpv4Conf& conf) {
  AMBIENT_ASSIGN_OR_RETURN(Sock sk, connect());
  return ensure_lo(sk.get(), /*up=*/false, conf);
}

Result<> add_inpod_routing(bool ipv6, const std::optional<LoIpv4Conf>& lo_conf) {
  AMBIENT_ASSIGN_OR_RETURN(Sock sk, connect());
  AMBIENT_RETURN_IF_ERROR(ensure_lo(sk.get(), /*up=*/true, lo_conf));
  const std::vector<IpFamily> ips = routed_families(ipv6);
  for (IpFamily ip : ips) {
    AMBIENT_ASSIGN_OR_RETURN(Route route, local_default_route(ip));
    if (int e = rtnl_route_add(sk.get(), route.get(), NLM_F_CREATE | NLM_F_REPLACE); e < 0) {
      return nl_error("add " + ip_name(ip) + " local default route to table 100", e);
    }
  }
  for (IpFamily ip : ips) {
    Rule rule = fwmark_rule(ip);
    // EXCL makes the kernel refuse a duplicate instead of adding it again.
    int e = rtnl_rule_add(sk.get(), rule.get(), NLM_F_CREATE | NLM_F_EXCL);
    if (e < 0 && e != -NLE_EXIST) {
      return nl_error("add " + ip_name(ip) + " fwmark rule to table 100", e);
    }
  }
  return {};
}

Result<> remove_inpod_routing() {
  AMBIENT_ASSIGN_OR_RETURN(Sock sk, connect());
  std::string errors;
  for (IpFamily ip : kIpFamilies) {
    Rule rule = fwmark_rule(ip);
    int e = rtnl_rule_delete(sk.get(), rule.get(), 0);
    if (e < 0 && e != -NLE_OBJ_NOTFOUND && e != -NLE_NOADDR && e != -NLE_AF_NOSUPPORT) {
      errors += std::string(errors.empty() ? "" : "; ") + "delete " + ip_name(ip) +
                " fwmark rule: " + nl_geterror(e);
    }
    auto route = local_default_route(ip);
    if (!route) return std::move(route).error();
    e = rtnl_route_delete(sk.get(), route->get(), 0);
    if (e < 0 && e != -NLE_OBJ_NOTFOUND && e != -NLE_NOADDR && e != -NLE_AF_NOSUPPORT) {
      errors += std::string(errors.empty() ? "" : "; ") + "delete " + ip_name(ip) +
                " table-100 route: " + nl_geterror(e);
    }
  }
  if (!errors.empty()) return make_error(Errc::Internal, errors);
  return {};
}

Result<std::vector<std::string>> check_inpod_routing(bool ipv6) {
  AMBIENT_ASSIGN_OR_RETURN(Sock sk, connect());
  std::vector<std::string> missing;
  const std::vector<IpFamily> ips = routed_families(ipv6);
  for (IpFamily ip : ips) {
    nl_cache* raw = nullptr;
    if (int e = rtnl_route_alloc_cache(sk.get(), af(ip), 0, &raw); e < 0) {
      return nl_error("list routes", e);
    }
    std::unique_ptr<nl_cache, CacheDeleter> routes(raw);
    bool found = false;
    for (nl_object* o = nl_cache_get_first(raw); o; o = nl_cache_get_next(o)) {
      auto* r = reinterpret_cast<rtnl_route*>(o);
      if (rtnl_route_get_table(r) == kRouteTable && rtnl_route_get_type(r) == RTN_LOCAL &&
          nl_addr_get_prefixlen(rtnl_route_get_dst(r)) == 0) {
        found = true;
      }
    }
    if (!found) missing.push_back(ip_name(ip) + " route local default dev lo table 100");

    raw = nullptr;
    if (int e = rtnl_rule_alloc_cache(sk.get(), af(ip), &raw); e < 0) {
      return nl_error("list rules", e);
    }
    std::unique_ptr<nl_cache, CacheDeleter> rules(raw);
    found = false;
    for (nl_object* o = nl_cache_get_first(raw); o; o = nl_cache_get_next(o)) {
      auto* r = reinterpret_cast<rtnl_rule*>(o);
      if (rtnl_rule_get_mark(r) == kInpodMark && rtnl_rule_get_mask(r) == kInpodMask &&
          rtnl_rule_get_table(r) == kRouteTable && rtnl_rule_get_prio(r) == kRulePriority) {
        found = true;
      }
    }
    if (!found) missing.push_back(ip_name(ip) + " rule fwmark 0x111/0xfff lookup 100");
  }
  return missing;
}

}  // namespace ambient::redirect
