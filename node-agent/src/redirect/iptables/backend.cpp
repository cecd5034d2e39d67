#include "redirect/iptables/backend.h"

#include <linux/netfilter.h>

#include <map>
#include <optional>
#include <sstream>

#include "fault/crash_point.h"
#include "log/log.h"
#include "process/process.h"
#include "redirect/inpod_netlink.h"
#include "redirect/netfilter_state.h"

namespace ambient::redirect {

namespace {

bool has_our_state(const std::string& save_output) {
  return save_output.find(":ISTIO_") != std::string::npos;
}

// Rule counts per (table, ISTIO chain) in an iptables-save dump.
std::map<std::string, int> istio_rule_counts(const std::string& save_output) {
  std::map<std::string, int> counts;
  std::string table, line;
  std::istringstream in(save_output);
  while (std::getline(in, line)) {
    if (line.rfind('*', 0) == 0) table = line.substr(1);
    if (line.rfind(":ISTIO_", 0) == 0) counts[table + "/" + line.substr(1, line.find(' ') - 1)];
    if (line.rfind("-A ISTIO_", 0) == 0) {
      counts[table + "/" + line.substr(3, line.find(' ', 3) - 3)]++;
    }
  }
  return counts;
}

// Our part of an iptables-save dump: each table's header and every line
// naming an ISTIO_ chain (no counters: user chains print [0:0], and the
// built-in chains' policy lines are not ours).
std::string istio_lines(const std::string& save_output) {
  std::string out, table, line;
  std::istringstream in(save_output);
  while (std::getline(in, line)) {
    if (line.rfind('*', 0) == 0) table = line;
    if (line.find("ISTIO_") == std::string::npos) continue;
    if (!table.empty()) {
      out += table + "\n";
      table.clear();
    }
    out += line + "\n";
  }
  return out;
}

}  // namespace

IptablesBackend::IptablesBackend(IptablesOptions opts) : opts_(opts) {
  log::info("iptables backend: {}-restore ({}), sandbox={}", variant_name(opts_.variant),
            legacy() ? "legacy" : "nf_tables", opts_.sandbox);
}

std::string IptablesBackend::bin(IpFamily ip, std::string_view tool) const {
  return iptables_binary(opts_.variant, ip, tool);
}

Result<std::string> IptablesBackend::save(IpFamily ip) const {
  auto r = run_checked({.argv = {bin(ip, "-save")}, .sandbox = opts_.sandbox});
  if (!r) return std::move(r).error();
  return r->out;
}

Result<> IptablesBackend::restore(IpFamily ip, const std::string& text) const {
  std::vector<std::string> argv = {bin(ip, "-restore"), "--noflush", "-v"};
  if (legacy()) argv.emplace_back("--wait=30");
  auto r = run_checked({.argv = argv, .stdin_data = text, .sandbox = opts_.sandbox});
  if (!r) return std::move(r).error();
  return {};
}

// Our chains with the right rule counts, then our lines equal to the
// reference's: what the kernel holds, as this iptables renders it.
std::vector<std::string> IptablesBackend::check_rules(const PodRedirectConfig& cfg, IpFamily ip,
                                                      const std::string& state,
                                                      const Reference& ref) const {
  std::vector<std::string> problems;
  auto have = istio_rule_counts(state);
  std::map<std::string, int> want;
  for (const auto& r : inpod_rules(cfg, ip)) {
    if (r.chain.rfind("ISTIO_", 0) == 0) want[r.table + "/" + r.chain]++;
    const auto& p = r.params;
    if (p.size() >= 2 && p[p.size() - 2] == "-j" && p.back().rfind("ISTIO_", 0) == 0) {
      want.try_emplace(r.table + "/" + p.back(), 0);
    }
  }
  const std::string ip_name(ip_family_name(ip));
  for (const auto& [chain, n] : want) {
    auto it = have.find(chain);
    if (it == have.end()) {
      problems.push_back(ip_name + " chain " + chain + " missing");
    } else if (it->second != n) {
      problems.push_back(ip_name + " chain " + chain + " has " + std::to_string(it->second) +
                         " rules, want " + std::to_string(n));
    }
  }
  for (const auto& [chain, n] : have) {
    if (!want.count(chain)) problems.push_back(ip_name + " unexpected chain " + chain);
  }
  if (problems.empty() && istio_lines(state) != ref.our_lines) {
    problems.push_back(ip_name + " rules differ from what our restore gives");
  }
  return problems;
}

std::vector<IpFamily> IptablesBackend::ip_families(const PodRedirectConfig& cfg) {
  if (cfg.ipv6) return {IpFamily::V4, IpFamily::V6};
  return {IpFamily::V4};
}

bool IptablesBackend::untouched_here(IpFamily ip) const {
  // iptables-nft keeps its rules in nf_tables, and a netns without any
  // table (a new pod) holds none. The kernel makes a netns's legacy tables
  // on first use. Either way a new pod needs no iptables-save (an exec,
  // ~1 ms) before its restores. When unsure, read.
  if (legacy()) {
    auto in_use = xtables_legacy_in_use_here(ip);
    return in_use && !*in_use;
  }
  auto tables = count_tables_here();
  return tables && *tables == 0;
}

Result<std::string> IptablesBackend::fingerprint_here(IpFamily ip) const {
  return legacy() ? xtables_legacy_fingerprint_here(ip)
                  : nf_tables_fingerprint_here(ip == IpFamily::V6 ? NFPROTO_IPV6 : NFPROTO_IPV4);
}

// What a pod with exactly this rule set looks like: our own restore in an
// empty netns, read back both ways.
Result<std::shared_ptr<const IptablesBackend::Reference>> IptablesBackend::reference(
    const PodRedirectConfig& cfg, IpFamily ip) const {
  const std::string rules = restore_text(inpod_rules(cfg, ip));
  const std::string ip_name(ip_family_name(ip));
  return references_.get(ip_name + "\n" + rules, [&]() -> Result<Reference> {
    Reference ref;
    auto made = netns::run_in_new_netns([&]() -> Result<> {
      AMBIENT_RETURN_IF_ERROR(restore(ip, rules));
      AMBIENT_ASSIGN_OR_RETURN(std::string state, save(ip));
      ref.our_lines = istio_lines(state);
      AMBIENT_ASSIGN_OR_RETURN(ref.fingerprint, fingerprint_here(ip));
      return {};
    });
    if (!made) {
      return std::move(made).error().context("make the reference " + ip_name +
                                             " rules in a scratch netns");
    }
    return ref;
  });
}

// Reading a pod's rules with iptables-save is an exec per pod and IP family:
// at an agent restart that was most of the time to reconcile every pod.
// A pod whose whole rule set equals the reference's (by fingerprint) holds
// exactly our rules, so only pods whose rules differ pay for the exec.
Result<std::vector<std::string>> IptablesBackend::problems_here(
    const PodRedirectConfig& cfg, IpFamily ip, std::optional<std::string>& state) const {
  AMBIENT_ASSIGN_OR_RETURN(auto ref, reference(cfg, ip));
  auto fingerprint = fingerprint_here(ip);
  if (fingerprint && *fingerprint == ref->fingerprint) return std::vector<std::string>{};
  if (!fingerprint) {
    log::debug("no {} rule-set fingerprint, reading iptables-save: {}", ip_family_name(ip),
               fingerprint.error().describe());
  }
  AMBIENT_ASSIGN_OR_RETURN(state, save(ip));
  return check_rules(cfg, ip, *state, *ref);
}

Result<> IptablesBackend::remove_here(IpFamily ip) const {
  AMBIENT_ASSIGN_OR_RETURN(std::string state, save(ip));
  std::string text = removal_text(state);
  if (text.empty()) return {};
  return restore(ip, text);
}

Result<> IptablesBackend::install_rules_here(const PodRedirectConfig& cfg, IpFamily ip,
                                             bool untouched) {
  if (!untouched) {
    std::optional<std::string> state;
    AMBIENT_ASSIGN_OR_RETURN(auto problems, problems_here(cfg, ip, state));
    if (problems.empty()) return {};  // already exactly right: leave it alone
    if (state && has_our_state(*state)) {
      log::info("rebuilding in-pod {} rules: {}", ip_family_name(ip), problems.front());
      AMBIENT_RETURN_IF_ERROR(restore(ip, removal_text(*state)));
    }
  }
  // One restore per IP family: its rules go in whole or not at all.
  return restore(ip, restore_text(inpod_rules(cfg, ip)));
}

Result<> IptablesBackend::install_here(const PodRedirectConfig& cfg,
                                       const std::function<void()>& routed) {
  // Routing first (upstream's order): on its own it is inert, since only
  // packets our connmark rules mark ever use table 100.
  AMBIENT_RETURN_IF_ERROR(add_inpod_routing(cfg.ipv6));
  crash_point_for_test("after-routing");
  if (routed) routed();
  // Asked before any restore: with iptables-nft, ipv4's tables would make
  // ipv6 look touched.
  const std::vector<IpFamily> ips = ip_families(cfg);
  std::vector<bool> untouched;
  untouched.reserve(ips.size());
  for (IpFamily ip : ips) untouched.push_back(untouched_here(ip));
  for (size_t i = 0; i < ips.size(); ++i) {
    AMBIENT_RETURN_IF_ERROR(install_rules_here(cfg, ips[i], untouched[i]));
  }
  return {};
}

Result<> IptablesBackend::install(const netns::Netns& ns, const PodRedirectConfig& cfg,
                                  const std::function<void()>& routed) {
  auto r = netns::run_in_netns(ns, [&]() -> Result<> {
    auto installed = install_here(cfg, routed);
    if (installed) return {};
    // Never leave half a rule set behind: take out whatever got in.
    (void)remove_here(IpFamily::V4);
    if (cfg.ipv6) (void)remove_here(IpFamily::V6);
    (void)remove_inpod_routing();
    return installed;
  });
  return std::move(r).context("install " + std::string(name()) + " rules in " + ns.path());
}

Result<VerifyReport> IptablesBackend::verify(const netns::Netns& ns,
                                             const PodRedirectConfig& cfg) const {
  VerifyReport report;
  auto r = netns::run_in_netns(ns, [&]() -> Result<> {
    for (IpFamily ip : ip_families(cfg)) {
      std::optional<std::string> state;
      AMBIENT_ASSIGN_OR_RETURN(auto problems, problems_here(cfg, ip, state));
      report.problems.insert(report.problems.end(), problems.begin(), problems.end());
    }
    AMBIENT_ASSIGN_OR_RETURN(auto missing, check_inpod_routing(cfg.ipv6));
    report.problems.insert(report.problems.end(), missing.begin(), missing.end());
    return {};
  });
  if (!r) {
    return std::move(r).error().context("verify " + std::string(name()) + " rules in " + ns.path());
  }
  report.complete = report.problems.empty();
  return report;
}

Result<> IptablesBackend::remove(const netns::Netns& ns, const PodRedirectConfig& cfg) {
  auto r = netns::run_in_netns(ns, [&]() -> Result<> {
    // Both IP families regardless of cfg.ipv6: remove what is there, not
    // what the current configuration would install.
    auto v4 = remove_here(IpFamily::V4);
    auto v6 = remove_here(IpFamily::V6);
    crash_point_for_test("remove-mid-backend");
    auto routing = remove_inpod_routing();
    if (!v4) return v4;
    if (!v6 && cfg.ipv6) return v6;  // without IPv6, ip6tables may just be unusable
    return routing;
  });
  return std::move(r).context("remove " + std::string(name()) + " rules from " + ns.path());
}

}  // namespace ambient::redirect
