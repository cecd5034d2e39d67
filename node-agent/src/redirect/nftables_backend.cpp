#include "redirect/nftables_backend.h"

#include <map>

#include "fault.h"
#include "json_fields.h"
#include "log.h"
#include "redirect/inpod_netlink.h"
#include "redirect/nft.h"
#include "redirect/nftables_rules.h"

namespace ambient::redirect {

// What the kernel holds, read back as JSON: rule counts per table/chain.
Result<std::vector<std::string>> NftablesBackend::problems_here(NftContext& ctx,
                                                                const PodRedirectConfig& cfg,
                                                                bool* any_ours) const {
  ctx.set_json(true);
  auto listed = ctx.run("list ruleset");
  ctx.set_json(false);
  AMBIENT_ASSIGN_OR_RETURN(std::string listing, std::move(listed));
  auto j = json::Json::parse(listing, nullptr, false);
  std::map<std::string, int> have;  // "table/chain" -> rules; chains present with 0
  if (!j.is_discarded() && j.contains("nftables")) {
    for (const auto& item : j["nftables"]) {
      if (item.contains("table") && any_ours) {
        const auto& t = item["table"];
        if (t.value("family", "") == "inet" &&
            t.value("name", "").rfind("istio-ambient-", 0) == 0) {
          *any_ours = true;
        }
      } else if (item.contains("chain")) {
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
  AMBIENT_ASSIGN_OR_RETURN(auto missing, check_inpod_routing(cfg.ipv6));
  problems.insert(problems.end(), missing.begin(), missing.end());
  return problems;
}

Result<> NftablesBackend::install(const netns::Netns& ns, const PodRedirectConfig& cfg) {
  auto r = netns::run_in_netns(ns, [&]() -> Result<> {
    // One context (one netlink socket) for the check and the transaction.
    AMBIENT_ASSIGN_OR_RETURN(NftContext ctx, NftContext::create());
    bool any_ours = false;
    AMBIENT_ASSIGN_OR_RETURN(auto problems, problems_here(ctx, cfg, &any_ours));
    if (problems.empty()) return {};  // exactly right already: leave it alone
    // Routing first: inert on its own (only packets our rules mark use
    // table 100), so the one transaction below is the moment the pod is
    // redirected: all of it, or nothing.
    AMBIENT_RETURN_IF_ERROR(add_inpod_routing(cfg.ipv6));
    crash_point_for_test("after-routing");
    // A fresh netns holds no table of ours, so there is none to delete: a
    // commit without deletions leaves the kernel no destroy work, which
    // closing the socket would otherwise wait for (redirect/nft.h).
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
    AMBIENT_ASSIGN_OR_RETURN(NftContext ctx, NftContext::create());
    AMBIENT_ASSIGN_OR_RETURN(report.problems, problems_here(ctx, cfg));
    return {};
  });
  if (!r) return std::move(r).error().with("verify nftables rules in " + ns.path());
  report.complete = report.problems.empty();
  return report;
}

Result<> NftablesBackend::remove(const netns::Netns& ns, const PodRedirectConfig&) {
  auto r = netns::run_in_netns(ns, [&]() -> Result<> {
    AMBIENT_ASSIGN_OR_RETURN(NftContext ctx, NftContext::create());
    ctx.close_later();
    auto tables = ctx.run(inpod_nft_delete_text());
    auto routing = remove_inpod_routing();
    if (!tables) return std::move(tables).error();
    return routing;
  });
  return std::move(r).context("remove nftables rules from " + ns.path());
}

}  // namespace ambient::redirect
