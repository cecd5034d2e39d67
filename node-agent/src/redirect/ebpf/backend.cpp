#include "redirect/ebpf/backend.h"

#include <algorithm>
#include <set>

#include "fault/crash_point.h"
#include "log/log.h"
#include "netns/sock_diag.h"
#include "redirect/ebpf/tw_link.h"
#include "redirect/inpod_netlink.h"

namespace ambient::redirect {

namespace ebpf {

std::vector<Attachment> plan(const std::vector<Interface>& interfaces,
                             const PodRedirectConfig& cfg) {
  std::vector<Attachment> out;
  for (const Interface& itf : interfaces) {
    if (itf.loopback) out.push_back({itf, Hook::Ingress, Program::LoIngress});
  }
  for (const Interface& itf : interfaces) {
    if (itf.ethernet) out.push_back({itf, Hook::Egress, Program::Egress});
  }
  for (const Interface& itf : interfaces) {
    if (!itf.ethernet) continue;
    const auto& vifs = cfg.virtual_interfaces;
    if (std::find(vifs.begin(), vifs.end(), itf.name) != vifs.end()) {
      // As with the rules, a virtual interface's TCP is egress even in
      // ingress mode (docs/redirection.md#overrides).
      out.push_back({itf, Hook::Ingress, Program::VifIngress});
    } else if (!cfg.ingress_mode) {
      out.push_back({itf, Hook::Ingress, Program::Ingress});
    }
  }
  return out;
}

}  // namespace ebpf

namespace {

using namespace ebpf;

// lo.accept_local: packets looped to lo carry the pod's own address as
// source, which the input route check refuses otherwise. lo.route_localnet:
// a DNS query rewritten to 127.0.0.1 arrives on lo without a route and is
// a martian otherwise. Both are per netns and only read for lo.
LoIpv4Conf wanted_lo_conf(const PodRedirectConfig& cfg) {
  return {.accept_local = true, .route_localnet = cfg.dns_capture};
}

// One hook where a filter of ours is or should be: what it should hold
// (nothing when unset) and the program it holds (0: none).
struct HookState {
  Interface itf;
  Hook hook;
  std::optional<Program> want;
  uint32_t have = 0;
};

// Whether an attached program (by id) may stay where `Program` is wanted:
// an earlier agent's that does exactly what ours would.
using Adopt = std::function<bool(uint32_t, Program)>;

// The plan's hooks in its order, then every other hook we could have used
// (lo ingress, both hooks of Ethernet interfaces), each with its program.
// An adoptable program counts as ours.
Result<std::vector<HookState>> read_hooks(const std::vector<Interface>& interfaces,
                                          const std::vector<Attachment>& wanted,
                                          const ProgramSet& set, const Adopt& adopt) {
  std::vector<HookState> out;
  out.reserve(wanted.size() + 2 * interfaces.size());
  for (const Attachment& a : wanted) out.push_back({a.itf, a.hook, a.program});
  auto planned = [&](int ifindex, Hook hook) {
    return std::any_of(wanted.begin(), wanted.end(), [&](const Attachment& a) {
      return a.itf.ifindex == ifindex && a.hook == hook;
    });
  };
  for (const Interface& itf : interfaces) {
    for (Hook hook : {Hook::Ingress, Hook::Egress}) {
      const bool usable = itf.ethernet || (itf.loopback && hook == Hook::Ingress);
      if (usable && !planned(itf.ifindex, hook)) out.push_back({itf, hook, std::nullopt});
    }
  }
  for (HookState& h : out) {
    AMBIENT_ASSIGN_OR_RETURN(h.have, attached_program(h.itf, h.hook));
    if (!h.want || h.have == 0) continue;
    const uint32_t mine = set.get(*h.want).id;
    if (h.have != mine && adopt(h.have, *h.want)) h.have = mine;
  }
  return out;
}

std::string where(const HookState& h) { return h.itf.name + " " + std::string(hook_name(h.hook)); }

std::vector<std::string> hook_problems(const std::vector<HookState>& hooks, const ProgramSet& set) {
  std::vector<std::string> problems;
  for (const HookState& h : hooks) {
    if (h.want) {
      const LoadedProgram want = set.get(*h.want);
      const std::string name(program_name(*h.want));
      if (h.have == 0) {
        problems.push_back(where(h) + ": no " + name + " filter");
      } else if (h.have != want.id) {
        problems.push_back(where(h) + ": program " + std::to_string(h.have) + " (" +
                           program_name_by_id(h.have) + ") instead of this agent's " + name + " (" +
                           std::to_string(want.id) + ")");
      }
    } else if (h.have != 0) {
      const std::string name = program_name_by_id(h.have);
      if (name.rfind(kProgramNamePrefix, 0) == 0) {
        problems.push_back(where(h) + ": unexpected " + name + " filter");
      }
    }
  }
  return problems;
}

// Everything about the calling thread's netns that differs from `cfg`'s
// state: filters, routing, sysctls.
Result<std::vector<std::string>> problems_here(const std::vector<HookState>& hooks,
                                               const ProgramSet& set,
                                               const PodRedirectConfig& cfg) {
  std::vector<std::string> problems = hook_problems(hooks, set);
  AMBIENT_ASSIGN_OR_RETURN(auto routing, check_inpod_routing(cfg.ipv6));
  problems.insert(problems.end(), routing.begin(), routing.end());
  AMBIENT_ASSIGN_OR_RETURN(const LoIpv4Conf have, read_lo_ipv4_conf());
  const LoIpv4Conf want = wanted_lo_conf(cfg);
  auto compare = [&](const char* name, bool h, bool w) {
    if (h != w) {
      problems.push_back(std::string("net.ipv4.conf.lo.") + name + " is " + (h ? "1" : "0") +
                         ", want " + (w ? "1" : "0"));
    }
  };
  compare("accept_local", have.accept_local, want.accept_local);
  compare("route_localnet", have.route_localnet, want.route_localnet);
  return problems;
}

// Sysctls and routing first, inert on their own; then the filters in the
// plan's order, each replaced in place when it holds another program;
// then ours where the configuration wants none.
Result<> apply_here(const std::vector<HookState>& hooks, const ProgramSet& set,
                    const PodRedirectConfig& cfg, const std::function<void()>& routed) {
  AMBIENT_RETURN_IF_ERROR(add_inpod_routing(cfg.ipv6, wanted_lo_conf(cfg)));
  crash_point_for_test("after-routing");
  if (routed) routed();
  std::set<int> with_clsact;
  for (const HookState& h : hooks) {
    if (!h.want) continue;
    const LoadedProgram prog = set.get(*h.want);
    if (h.have == prog.id) continue;
    if (with_clsact.insert(h.itf.ifindex).second) {
      AMBIENT_RETURN_IF_ERROR(ensure_clsact(h.itf));
    }
    AMBIENT_RETURN_IF_ERROR(attach(h.itf, h.hook, prog.fd));
  }
  for (const HookState& h : hooks) {
    if (!h.want && h.have != 0) AMBIENT_RETURN_IF_ERROR(detach_ours(h.itf, h.hook));
  }
  return {};
}

// The reverse of an install: inbound capture stops first, lo's program
// goes last; then routing (unless `keep_routing`: the rules use the same),
// then the sysctls back to a new netns's values. Every step is tried; the
// errors are joined.
Result<> remove_here(bool keep_routing = false) {
  std::string errors;
  auto note = [&](const Error& e) { errors += (errors.empty() ? "" : "; ") + e.describe(); };
  // Unlistable interfaces still leave the routing and lo's settings to undo.
  auto listed = list_interfaces();
  if (listed) {
    std::stable_partition(listed->begin(), listed->end(),
                          [](const Interface& itf) { return !itf.loopback; });
    for (Hook hook : {Hook::Ingress, Hook::Egress}) {
      for (const Interface& itf : *listed) {
        if (auto detached = detach_ours(itf, hook); !detached) note(detached.error());
      }
    }
  } else {
    note(listed.error());
  }
  if (!keep_routing) {
    if (auto routing = remove_inpod_routing(); !routing) note(routing.error());
  }
  if (auto reset = set_lo_ipv4_conf({}); !reset) note(reset.error());
  if (!errors.empty()) return make_error(Errc::Internal, errors);
  return {};
}

// ztunnel's outbound listener here (mark 0x539, TCP 15001): whether it has
// IP_TRANSPARENT; nullopt when there is none or the kernel does not say.
Result<std::optional<bool>> outbound_listener_transparent() {
  AMBIENT_ASSIGN_OR_RETURN(auto socks, netns::listening_sockets_here(/*tcp_only=*/true));
  for (const auto& s : socks) {
    if (s.proto == "tcp" && s.port == kOutboundPort && (s.mark & kInpodMask) == kZtunnelMark) {
      return s.transparent;
    }
  }
  return std::optional<bool>();
}

}  // namespace

namespace {

Adopt adopter(ebpf::Programs& programs, const Variant& v) {
  return [&programs, v](uint32_t id, Program p) {
    auto ok = programs.adoptable(id, p, v);
    if (!ok) log::debug("eBPF program {} not adopted: {}", id, ok.error().describe());
    return ok && *ok;
  };
}

AdoptLink link_adopter(ebpf::Programs& programs, const Variant& v) {
  return [adopt = adopter(programs, v)](uint32_t id) { return adopt(id, Program::TwLookup); };
}

}  // namespace

bool EbpfBackend::on_rules(const netns::Netns& ns) const {
  return rules_ && has_rules_marker(programs_->link_dir(), ns);
}

std::string EbpfBackend::pod_backend(const netns::Netns& ns) const {
  return on_rules(ns) ? std::string(rules_->name()) : std::string(name());
}

Result<> EbpfBackend::install(const netns::Netns& ns, const PodRedirectConfig& cfg,
                              const std::function<void()>& routed) {
  if (on_rules(ns)) return rules_->install(ns, cfg, routed);
  const std::string context = "install eBPF redirection in " + ns.path();
  auto variant = variant_for(cfg);
  if (!variant) return std::move(variant).error().context(context);
  auto set = programs_->get(*variant);
  if (!set) return std::move(set).error().context(context);
  // The hand-off past TIME_WAIT first: tc passes those SYNs from the moment
  // its programs are attached.
  auto link = ensure_tw_link(programs_->link_dir(), ns, (*set)->get(Program::TwLookup),
                             link_adopter(*programs_, *variant));
  if (!link) return std::move(link).context(context);
  bool filters_gone = false;
  auto r = netns::run_in_netns(ns, [&]() -> Result<> {
    AMBIENT_ASSIGN_OR_RETURN(auto interfaces, list_interfaces());
    AMBIENT_ASSIGN_OR_RETURN(auto hooks, read_hooks(interfaces, plan(interfaces, cfg), **set,
                                                    adopter(*programs_, *variant)));
    // A new pod has no filter of ours: nothing to compare.
    const bool any =
        std::any_of(hooks.begin(), hooks.end(), [](const HookState& h) { return h.have != 0; });
    if (any) {
      AMBIENT_ASSIGN_OR_RETURN(auto problems, problems_here(hooks, **set, cfg));
      if (problems.empty()) return {};  // exactly right: leave it alone
    }
    auto applied = apply_here(hooks, **set, cfg, routed);
    if (!applied) filters_gone = remove_here().has_value();
    return applied;
  });
  // A filter left behind may still pass a SYN past a TIME_WAIT: it keeps the link.
  if (filters_gone) (void)remove_tw_link(programs_->link_dir(), ns);
  return std::move(r).context(context);
}

Result<VerifyReport> EbpfBackend::verify(const netns::Netns& ns,
                                         const PodRedirectConfig& cfg) const {
  if (on_rules(ns)) return rules_->verify(ns, cfg);
  const std::string context = "verify eBPF redirection in " + ns.path();
  auto variant = variant_for(cfg);
  if (!variant) return std::move(variant).error().context(context);
  auto set = programs_->get(*variant);
  if (!set) return std::move(set).error().context(context);
  VerifyReport report;
  auto r = netns::run_in_netns(ns, [&]() -> Result<> {
    AMBIENT_ASSIGN_OR_RETURN(auto interfaces, list_interfaces());
    AMBIENT_ASSIGN_OR_RETURN(auto hooks, read_hooks(interfaces, plan(interfaces, cfg), **set,
                                                    adopter(*programs_, *variant)));
    AMBIENT_ASSIGN_OR_RETURN(report.problems, problems_here(hooks, **set, cfg));
    return {};
  });
  if (!r) return std::move(r).error().context(context);
  auto link = tw_link_problem(programs_->link_dir(), ns, (*set)->get(Program::TwLookup),
                              link_adopter(*programs_, *variant));
  if (!link) return std::move(link).error().context(context);
  if (*link) report.problems.push_back(**link);
  report.complete = report.problems.empty();
  return report;
}

// The link goes after the filters, whose SYNs past a TIME_WAIT need it.
Result<> EbpfBackend::remove(const netns::Netns& ns, const PodRedirectConfig& cfg) {
  const std::string context = "remove eBPF redirection from " + ns.path();
  if (on_rules(ns)) {
    AMBIENT_RETURN_IF_ERROR(rules_->remove(ns, cfg));
    AMBIENT_RETURN_IF_ERROR(remove_rules_marker(programs_->link_dir(), ns).context(context));
  }
  auto filters = netns::run_in_netns(ns, [] { return remove_here(); });
  if (!filters) return std::move(filters).context(context);
  crash_point_for_test("remove-mid-backend");
  return remove_tw_link(programs_->link_dir(), ns).context(context);
}

// docs/redirection.md#ebpf-fallback. The marker goes first, so that an
// agent stopped half way finishes the move on its next install; the rules
// go in while the filters still capture (both fail closed meanwhile); the
// filters go last, the routing staying for the rules. The link stays
// pinned: the marker lives as long as it.
Result<bool> EbpfBackend::ztunnel_ready(const netns::Netns& ns, const PodRedirectConfig& cfg) {
  if (!rules_) return true;
  if (on_rules(ns)) return false;
  const std::string context = "check ztunnel's listeners for eBPF in " + ns.path();
  std::optional<bool> transparent;
  auto checked = netns::run_in_netns(ns, [&]() -> Result<> {
    AMBIENT_ASSIGN_OR_RETURN(transparent, outbound_listener_transparent());
    return {};
  });
  if (!checked) return std::move(checked).error().context(context);
  // No listener, or a kernel that does not say: nothing to decide on yet.
  if (!transparent) return false;
  if (*transparent) return true;
  log::warn(
      "netns {}: ztunnel's outbound listener has no IP_TRANSPARENT (ztunnel with "
      "ENABLE_ORIG_SRC=false?), which eBPF's IPv4 hand-over needs: this pod gets the {} rules "
      "instead",
      ns.path(), rules_->name());
  const std::string move =
      "move " + ns.path() + " from eBPF to the " + std::string(rules_->name()) + " rules";
  AMBIENT_RETURN_IF_ERROR(add_rules_marker(programs_->link_dir(), ns).context(move));
  AMBIENT_RETURN_IF_ERROR(rules_->install(ns, cfg).context(move));
  AMBIENT_RETURN_IF_ERROR(
      netns::run_in_netns(ns, [] { return remove_here(/*keep_routing=*/true); }).context(move));
  return false;
}

}  // namespace ambient::redirect
