#include "iptables_backend.h"

#include <map>
#include <sstream>

#include "fault.h"
#include "log.h"
#include "process.h"
#include "redirect/inpod_netlink.h"
#include "redirect/nft.h"

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

// Checks each expected rule with `-C` (what the kernel holds, not how
// iptables-save happens to print it) plus the rule count of each chain.
// One -C is an exec per rule (~20 per family, ~40 ms a pod), so once a pod
// passes, iptables-save's rendering of its rules becomes the reference for
// that rule set: later pods (an agent restart reconciles every pod) only
// compare their dump to it. Same binary, same kernel, same text.
Result<std::vector<std::string>> IptablesBackend::check_rules(const PodRedirectConfig& cfg, bool v6,
                                                              const std::string& state) const {
  std::vector<std::string> problems;
  auto have = istio_rule_counts(state);
  std::map<std::string, int> want;
  const auto rules = inpod_rules(cfg, v6);
  for (const auto& r : rules) {
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
  if (!problems.empty()) return problems;
  const std::string key = std::string(fam) + "\n" + restore_text(rules);
  const std::string mine = istio_lines(state);
  {
    std::lock_guard lk(reference_mu_);
    if (auto it = reference_.find(key); it != reference_.end()) {
      if (mine != it->second) {
        problems.push_back(std::string(fam) + " rules differ from the verified rendering");
      }
      return problems;
    }
  }
  for (const auto& r : rules) {
    std::vector<std::string> argv = {bin(v6, ""), "-t", r.table, "-C", r.chain};
    argv.insert(argv.end(), r.params.begin(), r.params.end());
    if (legacy_) argv.push_back("--wait=30");
    AMBIENT_ASSIGN_OR_RETURN(CommandResult c,
                             run_command({.argv = argv, .sandbox = opts_.sandbox}));
    if (c.exit_code != 0) {
      std::string text = r.chain;
      for (const auto& p : r.params) text += " " + p;
      problems.push_back(std::string(fam) + " rule missing: -t " + r.table + " " + text);
    }
  }
  if (problems.empty()) {
    std::lock_guard lk(reference_mu_);
    reference_.emplace(key, mine);
  }
  return problems;
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
  // iptables-nft keeps its rules in nf_tables: a netns without any table
  // (a new pod) has none of ours, and needs no iptables-save (an exec,
  // ~1 ms) before its restores. iptables-legacy's rules are not there.
  bool fresh = false;
  if (!legacy_) {
    auto tables = count_tables_here();
    fresh = tables && *tables == 0;
  }
  std::vector<bool> families = {false};
  if (cfg.ipv6) families.push_back(true);
  for (bool v6 : families) {
    if (!fresh) {
      AMBIENT_ASSIGN_OR_RETURN(std::string state, save(v6));
      if (has_our_state(state)) {
        AMBIENT_ASSIGN_OR_RETURN(auto problems, check_rules(cfg, v6, state));
        if (problems.empty()) continue;  // already exactly right: leave it alone
        log::info("rebuilding in-pod {} rules: {}", v6 ? "ipv6" : "ipv4", problems.front());
        AMBIENT_RETURN_IF_ERROR(restore(v6, removal_text(state)));
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
    for (bool v6 : {false, true}) {
      if (v6 && !cfg.ipv6) continue;
      AMBIENT_ASSIGN_OR_RETURN(std::string state, save(v6));
      AMBIENT_ASSIGN_OR_RETURN(auto problems, check_rules(cfg, v6, state));
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
