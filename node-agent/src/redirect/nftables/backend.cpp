#include "redirect/nftables/backend.h"

#include <linux/netfilter.h>

#include <map>
#include <sstream>

#include "fault/crash_point.h"
#include "lib/json_fields.h"
#include "log/log.h"
#include "redirect/inpod_netlink.h"
#include "redirect/netfilter_state.h"
#include "redirect/nftables/nft.h"
#include "redirect/nftables/rules.h"

namespace ambient::redirect {

namespace {
// Our tables' names start with istio-ambient- (kNftTables).
bool lists_ours(const std::string& listing) {
  return listing.find("table inet istio-ambient-") != std::string::npos;
}

// Our tables' blocks in a listing, in order: from "table inet istio-ambient-"
// to the closing brace at the start of a line.
std::string our_tables(const std::string& listing) {
  std::string out, line;
  std::istringstream in(listing);
  bool inside = false;
  while (std::getline(in, line)) {
    if (line.rfind("table inet istio-ambient-", 0) == 0) inside = true;
    if (inside) out += line + "\n";
    if (line == "}") inside = false;
  }
  return out;
}
}  // namespace

// Our own transaction in an empty netns, read back: its fingerprint, and
// the listing of our tables.
Result<std::shared_ptr<const NftablesBackend::Reference>> NftablesBackend::reference(
    const PodRedirectConfig& cfg) const {
  const std::string text = inpod_nft_text(cfg);
  return references_.get(text, [&]() -> Result<Reference> {
    Reference ref;
    auto made = netns::run_in_new_netns([&]() -> Result<> {
      AMBIENT_ASSIGN_OR_RETURN(NftContext ctx, NftContext::create());
      AMBIENT_RETURN_IF_ERROR(ctx.run(text));
      AMBIENT_ASSIGN_OR_RETURN(ref.fingerprint, nf_tables_fingerprint_here(NFPROTO_UNSPEC));
      AMBIENT_ASSIGN_OR_RETURN(std::string listing, list_here(ctx));
      ref.our_tables = our_tables(listing);
      return {};
    });
    if (!made)
      return std::move(made).error().context("make the reference rules in a scratch netns");
    return ref;
  });
}

// A pod whose whole ruleset has the reference's fingerprint holds exactly
// our tables, and needs no listing (libnftables, under its lock).
bool NftablesBackend::exactly_ours_here(const PodRedirectConfig& cfg) const {
  auto ref = reference(cfg);
  auto here = nf_tables_fingerprint_here(NFPROTO_UNSPEC);
  if (ref && here) return *here == (*ref)->fingerprint;
  // The listing below still tells.
  log::debug("nftables: no fingerprint comparison: {}",
             (ref ? here.error() : ref.error()).describe());
  return false;
}

Result<std::string> NftablesBackend::list_here(NftContext& ctx) {
  ctx.set_stateless(true);
  auto listed = ctx.run("list ruleset");
  ctx.set_stateless(false);
  return listed;
}

// Reached only when the ruleset is not exactly ours (exactly_ours_here):
// judged chain by chain from the kernel's JSON listing, so other tables
// next to ours are no problem, then our tables' listing against the
// reference's, so a rule changed in place is one too.
Result<std::vector<std::string>> NftablesBackend::table_problems(
    NftContext& ctx, const std::string& listing, const PodRedirectConfig& cfg) const {
  // Rule counts per table/chain, from what the kernel holds as JSON.
  std::map<std::string, int> have;  // "table/chain" -> rules; chains present with 0
  if (lists_ours(listing)) {
    ctx.set_json(true);
    auto listed = ctx.run("list ruleset");
    ctx.set_json(false);
    AMBIENT_ASSIGN_OR_RETURN(std::string text, std::move(listed));
    auto j = json::Json::parse(text, nullptr, false);
    if (!j.is_discarded() && j.contains("nftables")) {
      for (const auto& item : j["nftables"]) {
        if (item.contains("chain")) {
          const auto& c = item["chain"];
          if (c.value("family", "") == "inet")
            have.try_emplace(c.value("table", "") + "/" + c.value("name", ""), 0);
        } else if (item.contains("rule")) {
          const auto& r = item["rule"];
          if (r.value("family", "") == "inet")
            have[r.value("table", "") + "/" + r.value("chain", "")]++;
        }
      }
    }
  }
  std::map<std::string, int> want;
  for (const auto& r : inpod_nft_rules(cfg)) {
    for (const char* chain : {"prerouting", "output", "istio-prerouting", "istio-output"}) {
      want.try_emplace(r.table + "/" + chain, 0);
    }
    want[r.table + "/" + r.chain]++;
  }
  std::vector<std::string> problems;
  for (const auto& [chain, n] : want) {
    auto it = have.find(chain);
    if (it == have.end())
      problems.push_back("nft chain " + chain + " missing");
    else if (it->second != n) {
      problems.push_back("nft chain " + chain + " has " + std::to_string(it->second) +
                         " rules, want " + std::to_string(n));
    }
  }
  for (const auto& [chain, n] : have) {
    bool ours = chain.rfind("istio-ambient-", 0) == 0;
    if (ours && !want.count(chain)) problems.push_back("unexpected nft chain " + chain);
  }
  if (problems.empty()) {
    AMBIENT_ASSIGN_OR_RETURN(auto ref, reference(cfg));
    if (our_tables(listing) != ref->our_tables) {
      problems.emplace_back("nft rules differ from what our transaction gives");
    }
  }
  return problems;
}

Result<> NftablesBackend::install(const netns::Netns& ns, const PodRedirectConfig& cfg,
                                  const std::function<void()>& routed) {
  auto r = netns::run_in_netns(ns, [&]() -> Result<> {
    // A new pod's netns holds no table at all, so none of ours: nothing to
    // compare, and one netlink dump tells (a listing costs ~4× as much).
    AMBIENT_ASSIGN_OR_RETURN(size_t tables, count_tables_here());
    // Routing first: inert on its own (only packets our rules mark use
    // table 100), so the one transaction below is the moment the pod is
    // redirected: all of it, or nothing. For a new pod it goes in before
    // anything else, so ztunnel gets the pod as early as it may.
    auto route = [&]() -> Result<> {
      AMBIENT_RETURN_IF_ERROR(add_inpod_routing(cfg.ipv6));
      crash_point_for_test("after-routing");
      if (routed) routed();
      return {};
    };
    if (tables > 0 && exactly_ours_here(cfg)) {
      AMBIENT_ASSIGN_OR_RETURN(auto missing, check_inpod_routing(cfg.ipv6));
      if (missing.empty()) return {};  // exactly right: leave it alone
    }
    if (tables == 0) AMBIENT_RETURN_IF_ERROR(route());
    // One context (one netlink socket) for the check and the transaction.
    auto created = NftContext::create();
    if (!created) {
      if (tables == 0) (void)remove_inpod_routing();
      return std::move(created).error();
    }
    NftContext ctx = std::move(*created);
    std::string listing;
    if (tables > 0) {
      AMBIENT_ASSIGN_OR_RETURN(listing, list_here(ctx));
    }
    const bool any_ours = lists_ours(listing);
    if (any_ours) {
      AMBIENT_ASSIGN_OR_RETURN(auto problems, table_problems(ctx, listing, cfg));
      AMBIENT_ASSIGN_OR_RETURN(auto missing, check_inpod_routing(cfg.ipv6));
      if (problems.empty() && missing.empty()) return {};  // exactly right: leave it alone
    }
    if (tables > 0) AMBIENT_RETURN_IF_ERROR(route());
    // A fresh netns holds no table of ours, so there is none to delete: a
    // commit without deletions leaves the kernel no destroy work, which
    // closing the socket would otherwise wait for (redirect/nftables/nft.h).
    const std::string text = any_ours ? inpod_nft_apply_text(cfg) : inpod_nft_text(cfg);
    if (any_ours) ctx.close_later();
    if (auto applied = ctx.run(text + extra_for_test_); !applied) {
      (void)remove_inpod_routing();
      return std::move(applied).error();
    }
    return {};
  });
  return std::move(r).context("install nftables rules in " + ns.path());
}

Result<VerifyReport> NftablesBackend::verify(const netns::Netns& ns,
                                             const PodRedirectConfig& cfg) const {
  VerifyReport report;
  auto r = netns::run_in_netns(ns, [&]() -> Result<> {
    if (!exactly_ours_here(cfg)) {
      AMBIENT_ASSIGN_OR_RETURN(NftContext ctx, NftContext::create());
      AMBIENT_ASSIGN_OR_RETURN(std::string listing, list_here(ctx));
      AMBIENT_ASSIGN_OR_RETURN(report.problems, table_problems(ctx, listing, cfg));
    }
    AMBIENT_ASSIGN_OR_RETURN(auto missing, check_inpod_routing(cfg.ipv6));
    report.problems.insert(report.problems.end(), missing.begin(), missing.end());
    return {};
  });
  if (!r) return std::move(r).error().context("verify nftables rules in " + ns.path());
  report.complete = report.problems.empty();
  return report;
}

Result<> NftablesBackend::remove(const netns::Netns& ns, const PodRedirectConfig&) {
  auto r = netns::run_in_netns(ns, [&]() -> Result<> {
    AMBIENT_ASSIGN_OR_RETURN(NftContext ctx, NftContext::create());
    ctx.close_later();
    auto tables = ctx.run(inpod_nft_delete_text());
    crash_point_for_test("remove-mid-backend");
    auto routing = remove_inpod_routing();
    if (!tables) return std::move(tables).error();
    return routing;
  });
  return std::move(r).context("remove nftables rules from " + ns.path());
}

}  // namespace ambient::redirect
