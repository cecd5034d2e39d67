// Choosing the redirection backend (spec redirection.md §6.1, node-agent.md
// §15.2; field lessons P18, P19, P22, P24).
//
// Detection only reads: `<bin>-save`, `<bin>-save --version`, `nft list
// tables` and `ipset list -n`. It never adds, checks (-C) or deletes a rule,
// because any such probe creates legacy tables, and the next start would then
// see "existing legacy rules" and flip nft -> legacy (P19). The decision is
// made once per boot and persisted in the run directory keyed by the boot ID,
// so a restart within a boot reuses it even if the host's rules changed.
//
// Not thread-safe with itself for the same run_dir (the persisted file is
// replaced atomically, so a concurrent reader sees the old or the new one).
// Runs its commands in the calling thread's network namespace: call it from
// the host netns (or from a run_in_netns() thread in tests).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/result.h"

namespace ambient::redirect {

enum class BackendKind { IptablesLegacy, IptablesNft, Nftables };

// The iptables binaries FORCE_IPTABLES_BINARY names: iptables-legacy or
// iptables-nft.
enum class IptablesVariant { Legacy, Nft };

// "iptables-legacy", "iptables-nft", "nftables".
std::string_view backend_name(BackendKind kind);
// The inverse of backend_name(); InvalidArgument for anything else.
Result<BackendKind> backend_from_name(std::string_view name);

// The file under DetectOptions::run_dir holding this boot's decision.
inline constexpr std::string_view kBackendChoiceFile = "redirect-backend.json";

struct DetectOptions {
  std::string run_dir;                // where the choice is persisted; "" = not persisted
  bool native_nftables = false;       // NATIVE_NFTABLES
  std::string force_iptables_binary;  // FORCE_IPTABLES_BINARY: "", "legacy", "nft"
  std::string boot_id_path = "/proc/sys/kernel/random/boot_id";
  // Runs a read-only command (argv) and returns its stdout; a non-zero exit
  // is an error. Empty means run_checked() with a 10 s timeout.
  std::function<Result<std::string>(const std::vector<std::string>&)> read_command;
  // With a choice reused from earlier this boot, skip reading the host for
  // leftovers (several commands, ~40 ms on a slow node): the caller runs
  // report_host_state() beside its start-up instead.
  bool defer_host_report = false;
};

struct Detection {
  BackendKind kind = BackendKind::IptablesNft;
  std::string reason;                  // human text for logs and /readyz
  bool from_cache = false;             // reused this boot's earlier decision
  std::vector<std::string> leftovers;  // state of backends not chosen, e.g.
                                       // "iptables-legacy: ISTIO_* chains in nat"
  std::vector<std::string> warnings;
  bool host_report_deferred = false;  // leftovers not read: see defer_host_report
};

// What detect_backend leaves out with defer_host_report: the host's state
// of the backends not chosen (leftovers) and the warnings reading it gives,
// logged and returned.
Detection report_host_state(const DetectOptions& opts, BackendKind kind);

// Decision, first match wins:
//   FORCE_IPTABLES_BINARY=legacy|nft -> that iptables family (other values:
//     InvalidArgument); always decided afresh and overwrites the stored choice;
//   a choice stored this boot that fits the request -> reused (from_cache);
//   NATIVE_NFTABLES -> nftables, unless iptables artifacts exist (ISTIO_*
//     chains in either family, or the istio-inpod-probes-v4/-v6 ipset), then
//     iptables until the node reboots (warning);
//   any `-A` rule in iptables-legacy-save -> iptables-legacy (P18: rules are
//     counted, not lines, so empty chain declarations do not count);
//   iptables-nft usable -> iptables-nft; iptables-legacy usable -> legacy;
//   otherwise Unavailable.
// Errors only for a bad setting or no usable backend; a run dir or boot ID
// that cannot be read or written gives a warning.
Result<Detection> detect_backend(const DetectOptions& opts);

// P24: can the host's `nft` binary list what we (libnftables) write? Applies
// a scratch ruleset with the constructs our nftables rules use, through
// libnftables, in a throwaway netns (a dedicated thread that unshares its
// network namespace; the host netns is never touched), then runs
// `<nft_binary> list ruleset` and `<nft_binary> -j list ruleset` from that
// thread. Returns a warning text if the binary is missing, is killed by a
// signal, fails, or lists less than was written; "" if it reads everything.
// Errors are failures of the check itself (no CAP_SYS_ADMIN, libnftables
// cannot apply the scratch ruleset).
Result<std::string> check_host_nft_compat(const std::string& nft_binary = "nft");

}  // namespace ambient::redirect
