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
    if (line.rfind("*", 0) == 0) table = line.substr(1);
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
    if (line.rfind("*", 0) == 0) table = line;
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

Result<std::unique_ptr<IptablesBackend>> IptablesBackend::create(IptablesOptions opts) {
  auto version = run_checked({.argv = {opts.family + "-save", "--version"}});
  if (!version) return std::move(version).error().with("detect iptables variant");
  bool legacy = version->out.find("nf_tables") == std::string::npos;
  log::info("iptables backend: {}-restore ({}), sandbox={}", opts.family,
            legacy ? "legacy" : "nf_tables", opts.sandbox);
  return std::unique_ptr<IptablesBackend>(new IptablesBackend(std::move(opts), legacy));
}

IptablesBackend::IptablesBackend(IptablesOptions opts, bool legacy)
    : opts_(std::move(opts)), legacy_(legacy), name_(legacy ? "iptables-legacy" : "iptables-nft") {}

std::string IptablesBackend::bin(bool v6, std::string_view suffix) const {
  std::string b = opts_.family;
  if (v6) b.replace(0, 2, "ip6");  // iptables-nft -> ip6tables-nft
  return b + std::string(suffix);
}

Result<std::string> IptablesBackend::save(bool v6) const {
  auto r = run_checked({.argv = {bin(v6, "-save")}, .sandbox = opts_.sandbox});
  if (!r) return std::move(r).error();
  return r->out;
}

Result<> IptablesBackend::restore(bool v6, const std::string& text) const {
  std::vector<std::string> argv = {bin(v6, "-restore"), "--noflush", "-v"};
  if (legacy_) argv.push_back("--wait=30");
  auto r = run_checked({.argv = argv, .stdin_data = text, .sandbox = opts_.sandbox});
  if (!r) return std::move(r).error();
  return {};
}

// Our chains with the right rule counts, then our lines equal to the
// reference's: what the kernel holds, as this iptables renders it.
std::vector<std::string> IptablesBackend::check_rules(const PodRedirectConfig& cfg, bool v6,
                                                      const std::string& state,
                                                      const Reference& ref) const {
  std::vector<std::string> problems;
  auto have = istio_rule_counts(state);
  std::map<std::string, int> want;
  for (const auto& r : inpod_rules(cfg, v6)) {
    if (r.chain.rfind("ISTIO_", 0) == 0) want[r.table + "/" + r.chain]++;
    const auto& p = r.params;
    if (p.size() >= 2 && p[p.size() - 2] == "-j" && p.back().rfind("ISTIO_", 0) == 0) {
      want.try_emplace(r.table + "/" + p.back(), 0);
    }
  }
  const char* fam = v6 ? "ipv6" : "ipv4";
  for (const auto& [chain, n] : want) {
    auto it = have.find(chain);
    if (it == have.end()) {
      problems.push_back(std::string(fam) + " chain " + chain + " missing");
    } else if (it->second != n) {
      problems.push_back(std::string(fam) + " chain " + chain + " has " +
                         std::to_string(it->second) + " rules, want " + std::to_string(n));
    }
  }
  for (const auto& [chain, n] : have) {
    if (!want.count(chain)) problems.push_back(std::string(fam) + " unexpected chain " + chain);
  }
  if (problems.empty() && istio_lines(state) != ref.our_lines) {
    problems.push_back(std::string(fam) + " rules differ from what our restore gives");
  }
  return problems;
}

std::vector<bool> IptablesBackend::families(const PodRedirectConfig& cfg) {
  if (cfg.ipv6) return {false, true};
  return {false};
}

bool IptablesBackend::untouched_here(bool v6) const {
  // iptables-nft keeps its rules in nf_tables, and a netns without any
  // table (a new pod) holds none. The kernel makes a netns's legacy tables
  // on first use. Either way a new pod needs no iptables-save (an exec,
  // ~1 ms) before its restores. When unsure, read.
  if (legacy_) {
    auto in_use = xtables_legacy_in_use_here(v6);
    return in_use && !*in_use;
  }
  auto tables = count_tables_here();
  return tables && *tables == 0;
}

Result<std::string> IptablesBackend::fingerprint_here(bool v6) const {
  return legacy_ ? xtables_legacy_fingerprint_here(v6)
                 : nf_tables_fingerprint_here(v6 ? NFPROTO_IPV6 : NFPROTO_IPV4);
}

// What a pod with exactly this rule set looks like: our own restore in an
// empty netns, read back both ways.
Result<std::shared_ptr<const IptablesBackend::Reference>> IptablesBackend::reference(
    const PodRedirectConfig& cfg, bool v6) const {
  const std::string rules = restore_text(inpod_rules(cfg, v6));
  const char* fam = v6 ? "ipv6" : "ipv4";
  return references_.get(std::string(fam) + "\n" + rules, [&]() -> Result<Reference> {
    Reference ref;
    auto made = netns::run_in_new_netns([&]() -> Result<> {
      AMBIENT_RETURN_IF_ERROR(restore(v6, rules));
      AMBIENT_ASSIGN_OR_RETURN(std::string state, save(v6));
      ref.our_lines = istio_lines(state);
      AMBIENT_ASSIGN_OR_RETURN(ref.fingerprint, fingerprint_here(v6));
      return {};
    });
    if (!made) {
      return std::move(made).error().with(std::string("make the reference ") + fam +
                                          " rules in a scratch netns");
    }
    return ref;
  });
}

// Reading a pod's rules with iptables-save is an exec per pod and family:
// at an agent restart that was most of the time to reconcile every pod.
// A pod whose whole rule set equals the reference's (by fingerprint) holds
// exactly our rules, so only pods whose rules differ pay for the exec.
Result<std::vector<std::string>> IptablesBackend::problems_here(
    const PodRedirectConfig& cfg, bool v6, std::optional<std::string>& state) const {
  AMBIENT_ASSIGN_OR_RETURN(auto ref, reference(cfg, v6));
  auto fingerprint = fingerprint_here(v6);
  if (fingerprint && *fingerprint == ref->fingerprint) return std::vector<std::string>{};
  if (!fingerprint) {
    log::debug("no {} rule-set fingerprint, reading iptables-save: {}", v6 ? "ipv6" : "ipv4",
               fingerprint.error().describe());
  }
  AMBIENT_ASSIGN_OR_RETURN(state, save(v6));
  return check_rules(cfg, v6, *state, *ref);
}

Result<> IptablesBackend::remove_here(bool v6) const {
  AMBIENT_ASSIGN_OR_RETURN(std::string state, save(v6));
  std::string text = removal_text(state);
  if (text.empty()) return {};
  return restore(v6, text);
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
  const std::vector<bool> fams = families(cfg);
  std::vector<bool> untouched;
  for (bool v6 : fams) untouched.push_back(untouched_here(v6));
  for (size_t i = 0; i < fams.size(); ++i) {
    const bool v6 = fams[i];
    if (!untouched[i]) {
      std::optional<std::string> state;
      AMBIENT_ASSIGN_OR_RETURN(auto problems, problems_here(cfg, v6, state));
      if (problems.empty()) continue;  // already exactly right: leave it alone
      if (state && has_our_state(*state)) {
        log::info("rebuilding in-pod {} rules: {}", v6 ? "ipv6" : "ipv4", problems.front());
        AMBIENT_RETURN_IF_ERROR(restore(v6, removal_text(*state)));
      }
    }
    // One restore per family: each family's rules go in whole or not at all.
    AMBIENT_RETURN_IF_ERROR(restore(v6, restore_text(inpod_rules(cfg, v6))));
  }
  return {};
}

Result<> IptablesBackend::install(const netns::Netns& ns, const PodRedirectConfig& cfg,
                                  const std::function<void()>& routed) {
  auto r = netns::run_in_netns(ns, [&]() -> Result<> {
    auto installed = install_here(cfg, routed);
    if (installed) return {};
    // Never leave half a rule set behind: take out whatever got in.
    (void)remove_here(false);
    if (cfg.ipv6) (void)remove_here(true);
    (void)remove_inpod_routing();
    return installed;
  });
  return std::move(r).context("install " + name_ + " rules in " + ns.path());
}

Result<VerifyReport> IptablesBackend::verify(const netns::Netns& ns,
                                             const PodRedirectConfig& cfg) const {
  VerifyReport report;
  auto r = netns::run_in_netns(ns, [&]() -> Result<> {
    for (bool v6 : families(cfg)) {
      std::optional<std::string> state;
      AMBIENT_ASSIGN_OR_RETURN(auto problems, problems_here(cfg, v6, state));
      report.problems.insert(report.problems.end(), problems.begin(), problems.end());
    }
    AMBIENT_ASSIGN_OR_RETURN(auto missing, check_inpod_routing(cfg.ipv6));
    report.problems.insert(report.problems.end(), missing.begin(), missing.end());
    return {};
  });
  if (!r) return std::move(r).error().with("verify " + name_ + " rules in " + ns.path());
  report.complete = report.problems.empty();
  return report;
}

Result<> IptablesBackend::remove(const netns::Netns& ns, const PodRedirectConfig& cfg) {
  auto r = netns::run_in_netns(ns, [&]() -> Result<> {
    // Both families regardless of cfg.ipv6: remove what is there, not what
    // the current configuration would install.
    auto v4 = remove_here(false);
    auto v6 = remove_here(true);
    auto routing = remove_inpod_routing();
    if (!v4) return v4;
    if (!v6 && cfg.ipv6) return v6;  // without IPv6, ip6tables may just be unusable
    return routing;
  });
  return std::move(r).context("remove " + name_ + " rules from " + ns.path());
}

}  // namespace ambient::redirect
