#include "redirect/nftables/compat.h"

#include <nftables/libnftables.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

#include "lib/text.h"
#include "log/log.h"
#include "netns/netns.h"
#include "process/process.h"

namespace ambient::redirect {

namespace {

// Every construct our in-pod (docs/redirection.md#nftables-rules) and host
// (docs/redirection.md#host-probe-snat) nftables rules use, in the text form
// knftables/our generator writes (numeric priorities, the double spaces of
// rules 7 and 10, sets with comments, skuid, snat). The addresses and the UID
// are samples.
constexpr std::string_view kScratchRuleset = R"(add table inet istio-ambient-nat
add chain inet istio-ambient-nat prerouting { type nat hook prerouting priority -100 ; }
add chain inet istio-ambient-nat output { type nat hook output priority -100 ; }
add chain inet istio-ambient-nat postrouting { type nat hook postrouting priority 100 ; }
add chain inet istio-ambient-nat istio-prerouting
add chain inet istio-ambient-nat istio-output
add set inet istio-ambient-nat istio-inpod-probes-v4 { type ipv4_addr ; comment "UUID of the pods that are part of ambient mesh" ; }
add set inet istio-ambient-nat istio-inpod-probes-v6 { type ipv6_addr ; comment "UUID of the pods that are part of ambient mesh" ; }
add element inet istio-ambient-nat istio-inpod-probes-v4 { 10.244.0.7 comment "0b4e1e7a-5f1e-4c3a-9d55-6a8f0e2d9c11" }
add element inet istio-ambient-nat istio-inpod-probes-v6 { fd00:10:244::7 comment "0b4e1e7a-5f1e-4c3a-9d55-6a8f0e2d9c11" }
add rule inet istio-ambient-nat output jump istio-output
add rule inet istio-ambient-nat prerouting jump istio-prerouting
add rule inet istio-ambient-nat istio-prerouting iifname fake1s0f0 meta l4proto tcp counter redirect to :15001
add rule inet istio-ambient-nat istio-prerouting iifname fake1s0f0 meta l4proto tcp counter return
add rule inet istio-ambient-nat istio-prerouting meta l4proto tcp ip saddr 169.254.7.127 counter accept
add rule inet istio-ambient-nat istio-prerouting meta l4proto tcp ip6 saddr fd16:9254:7127:1337:ffff:ffff:ffff:ffff counter accept
add rule inet istio-ambient-nat istio-output meta l4proto tcp ip daddr 169.254.7.127 counter accept
add rule inet istio-ambient-nat istio-output meta l4proto tcp ip6 daddr fd16:9254:7127:1337:ffff:ffff:ffff:ffff counter accept
add rule inet istio-ambient-nat istio-prerouting ip daddr != 127.0.0.1/32 tcp dport != 15008 mark and 0xfff  != 0x539 counter redirect to :15006
add rule inet istio-ambient-nat istio-prerouting ip6 daddr != ::1/128 tcp dport != 15008 mark and 0xfff != 0x539 counter redirect to :15006
add rule inet istio-ambient-nat istio-output oifname != lo mark and 0xfff != 0x539 udp dport 53 counter redirect to :15053
add rule inet istio-ambient-nat istio-output ip daddr != 127.0.0.1/32 tcp dport 53 mark and 0xfff != 0x539 counter redirect to :15053
add rule inet istio-ambient-nat istio-output ip6 daddr != ::1/128 tcp dport 53 mark and 0xfff != 0x539 counter redirect to :15053
add rule inet istio-ambient-nat istio-output meta l4proto tcp mark and 0xfff == 0x111 counter accept
add rule inet istio-ambient-nat istio-output oifname lo ip daddr != 127.0.0.1/32 counter accept
add rule inet istio-ambient-nat istio-output oifname lo ip6 daddr != ::1/128 counter accept
add rule inet istio-ambient-nat istio-output meta l4proto tcp ip daddr != 127.0.0.1/32 mark and 0xfff != 0x539 counter redirect to :15001
add rule inet istio-ambient-nat istio-output meta l4proto tcp ip6 daddr != ::1/128 mark and 0xfff != 0x539 counter redirect to :15001
add rule inet istio-ambient-nat postrouting meta l4proto tcp skuid 1000 ip daddr @istio-inpod-probes-v4 counter snat to 169.254.7.127
add rule inet istio-ambient-nat postrouting meta l4proto tcp skuid 1000 ip6 daddr @istio-inpod-probes-v6 counter snat to fd16:9254:7127:1337:ffff:ffff:ffff:ffff
add table inet istio-ambient-mangle
add chain inet istio-ambient-mangle prerouting { type filter hook prerouting priority -150 ; }
add chain inet istio-ambient-mangle output { type route hook output priority -150 ; }
add chain inet istio-ambient-mangle istio-prerouting
add chain inet istio-ambient-mangle istio-output
add rule inet istio-ambient-mangle prerouting jump istio-prerouting
add rule inet istio-ambient-mangle output jump istio-output
add rule inet istio-ambient-mangle istio-prerouting meta mark & 0xfff == 0x539 counter ct mark set ct mark & 0xfffff000 |  0x111
add rule inet istio-ambient-mangle istio-output ct mark and 0xfff == 0x111 counter meta mark set ct mark
add table inet istio-ambient-raw
add chain inet istio-ambient-raw prerouting { type filter hook prerouting priority -300 ; }
add chain inet istio-ambient-raw output { type filter hook output priority -300 ; }
add chain inet istio-ambient-raw istio-prerouting
add chain inet istio-ambient-raw istio-output
add rule inet istio-ambient-raw prerouting jump istio-prerouting
add rule inet istio-ambient-raw output jump istio-output
add rule inet istio-ambient-raw istio-output udp dport 53 meta mark and 0xfff == 0x539 counter ct zone set 1
add rule inet istio-ambient-raw istio-prerouting udp sport 53 meta mark and 0xfff != 0x539 counter ct zone set 1
)";

size_t count_of(std::string_view hay, std::string_view needle) {
  size_t n = 0;
  for (auto p = hay.find(needle); p != std::string_view::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

struct NftCtxDeleter {
  void operator()(nft_ctx* c) const { nft_ctx_free(c); }
};

// Applies the scratch ruleset in the calling thread's netns.
Result<> apply_scratch() {
  std::unique_ptr<nft_ctx, NftCtxDeleter> ctx(nft_ctx_new(NFT_CTX_DEFAULT));
  if (!ctx) return make_error(Errc::Internal, "nft_ctx_new failed");
  nft_ctx_buffer_output(ctx.get());
  nft_ctx_buffer_error(ctx.get());
  const std::string text(kScratchRuleset);
  if (nft_run_cmd_from_buffer(ctx.get(), text.c_str()) != 0) {
    const char* err = nft_ctx_get_error_buffer(ctx.get());
    return make_error(Errc::Internal, "libnftables rejected the scratch ruleset: " +
                                          text::first_line(err ? err : "no error text"));
  }
  return {};
}

// What the listing must contain for us to trust it: every table, chain and
// set name, and one `counter` per rule that has one.
std::string check_text_listing(std::string_view listing) {
  std::vector<std::string> missing;
  for (auto name : {"istio-ambient-nat", "istio-ambient-mangle", "istio-ambient-raw",
                    "istio-prerouting", "istio-output", "postrouting", "istio-inpod-probes-v4",
                    "istio-inpod-probes-v6", "0b4e1e7a-5f1e-4c3a-9d55-6a8f0e2d9c11"}) {
    if (listing.find(name) == std::string_view::npos) missing.emplace_back(name);
  }
  const size_t want = count_of(kScratchRuleset, " counter ");
  const size_t have = count_of(listing, "counter packets");
  if (!missing.empty()) return "the listing lacks " + text::join(missing, ", ");
  if (have != want) {
    return "the listing shows " + std::to_string(have) + " of " + std::to_string(want) +
           " counted rules";
  }
  for (auto marker : {"unknown", "invalid", "unsupported"}) {
    if (listing.find(marker) != std::string_view::npos) {
      return std::string("the listing contains \"") + marker + "\"";
    }
  }
  return "";
}

std::string check_json_listing(const std::string& listing) {
  auto doc = nlohmann::json::parse(listing, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("nftables") ||
      !doc["nftables"].is_array()) {
    return "its JSON listing is not an {\"nftables\": [...]} document";
  }
  size_t rules = 0, tables = 0;
  for (const auto& item : doc["nftables"]) {
    if (item.contains("rule")) ++rules;
    if (item.contains("table")) ++tables;
  }
  const size_t want = count_of(kScratchRuleset, "add rule ");
  if (tables != 3 || rules != want) {
    return "its JSON listing shows " + std::to_string(tables) + " tables and " +
           std::to_string(rules) + " rules, expected 3 and " + std::to_string(want);
  }
  return "";
}

// Runs `<nft> <args...>` and classifies the outcome; "" when it listed fine.
std::string list_with(const std::string& nft, const std::vector<std::string>& args, bool json) {
  std::vector<std::string> argv{nft};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string cmd = text::join(argv, " ");
  auto r = run_command({.argv = argv, .timeout = std::chrono::milliseconds(10000)});
  if (!r) return "`" + cmd + "` could not run: " + r.error().describe();
  if (r->exit_code == 127 && r->err.rfind("exec failed", 0) == 0) {
    return "host nft binary \"" + nft + "\" not found";
  }
  if (r->exit_code == -1) {
    return "`" + cmd + "` was killed by a signal (crashed) listing rules written by libnftables";
  }
  if (r->exit_code != 0) {
    if (json && r->err.find("JSON support not compiled-in") != std::string::npos) {
      log::debug("host nft has no JSON support; only the text listing was checked");
      return "";
    }
    return "`" + cmd + "` exited with " + std::to_string(r->exit_code) + ": " +
           text::first_line(r->err);
  }
  std::string problem = json ? check_json_listing(r->out) : check_text_listing(r->out);
  if (problem.empty() && !r->err.empty()) problem = "it printed " + text::first_line(r->err);
  if (!problem.empty()) {
    return "`" + cmd + "` cannot fully read rules written by libnftables: " + problem;
  }
  return "";
}

}  // namespace

Result<std::string> check_host_nft_compat(const std::string& nft_binary) {
  std::string warning;
  // In a private, throwaway netns (the host's is never touched): the
  // commands started there inherit it.
  auto r = netns::run_in_new_netns([&]() -> Result<> {
    AMBIENT_RETURN_IF_ERROR(apply_scratch());
    warning = list_with(nft_binary, {"list", "ruleset"}, false);
    if (warning.empty()) warning = list_with(nft_binary, {"-j", "list", "ruleset"}, true);
    return {};
  });
  if (!r) return std::move(r).error().context("nft compatibility check");
  if (!warning.empty()) log::warn("host nft compatibility: {}", warning);
  return warning;
}

}  // namespace ambient::redirect
