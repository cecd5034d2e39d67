// Choosing the redirection backend (docs/redirection.md#backend-choice).
//
// Detection only reads: `<bin>-save`, `<bin>-save --version`, `nft list
// tables` and `ipset list -n`. It never adds, checks (-C) or deletes a rule,
// because any such probe creates legacy tables, and the next start would then
// see "existing legacy rules" and flip nft -> legacy
// (docs/field-lessons.md#p19). The decision is made once per boot and
// persisted in the run directory keyed by the boot ID, so a restart within a
// boot reuses it even if the host's rules changed.
//
// It is also the one place that runs `<bin>-save --version`: the iptables
// backends get what it says through Detection::iptables_probe
// (redirect/factory.h).
//
// Not thread-safe with itself for the same run_dir (the persisted file is
// replaced atomically, so a concurrent reader sees the old or the new one).
// Runs its commands in the calling thread's network namespace: call it from
// the host netns (or from a run_in_netns() thread in tests).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/result.h"
#include "redirect/iptables/variant.h"

namespace ambient::redirect {

enum class BackendKind { IptablesLegacy, IptablesNft, Nftables };

// AMBIENT_EBPF_REDIRECTION: whether pods get eBPF programs instead of the
// netfilter backend's in-pod rules (the host side stays netfilter).
enum class EbpfRequest { Off, Auto, On };

// What the eBPF feature gate (ebpf/gate.h) answered.
struct EbpfGateAnswer {
  bool usable = false;
  std::string reason;
};

// "iptables-legacy", "iptables-nft", "nftables".
std::string_view backend_name(BackendKind kind);
// The inverse of backend_name(); InvalidArgument for anything else.
Result<BackendKind> backend_from_name(std::string_view name);

// The iptables variant whose binaries the backend runs; nullopt for nftables.
std::optional<IptablesVariant> iptables_variant(BackendKind kind);

// The file under DetectOptions::run_dir holding this boot's decision.
inline constexpr std::string_view kBackendChoiceFile = "redirect-backend.json";

struct DetectOptions {
  std::string run_dir;                            // where the choice is persisted; "" = not
  bool native_nftables = false;                   // NATIVE_NFTABLES
  std::optional<IptablesVariant> force_iptables;  // FORCE_IPTABLES_BINARY=legacy|nft
  std::string boot_id_path = "/proc/sys/kernel/random/boot_id";
  // Runs a read-only command (argv) and returns its stdout; a non-zero exit
  // is an error. Empty means run_checked() with a 10 s timeout.
  std::function<Result<std::string>(const std::vector<std::string>&)> read_command;
  // With a choice reused from earlier this boot, skip reading the host for
  // leftovers (several commands, ~40 ms on a slow node): the caller runs
  // report_host_state() beside its start-up instead.
  bool defer_host_report = false;
  EbpfRequest ebpf = EbpfRequest::Off;
  // Runs the eBPF feature gate; called at most once, and only when its
  // answer decides (a request for eBPF, or eBPF chosen earlier this boot).
  std::function<EbpfGateAnswer()> ebpf_gate;
};

struct Detection {
  BackendKind kind = BackendKind::IptablesNft;
  std::string reason;                  // human text for logs and /readyz
  bool from_cache = false;             // reused this boot's earlier decision
  std::vector<std::string> leftovers;  // state of backends not chosen, e.g.
                                       // "iptables-legacy: ISTIO_* chains in nat"
  std::vector<std::string> warnings;
  bool host_report_deferred = false;  // leftovers not read: see defer_host_report
  // With an iptables kind: what `<bin>-save --version` of the chosen
  // binaries says they are (nf_tables, else legacy), or why it could not
  // run. Unset for nftables.
  std::optional<Result<IptablesVariant>> iptables_probe;
  // Pods are redirected with eBPF; `kind` is then the host side's backend
  // only. Decided once per boot like `kind`: pods never change mechanism
  // while the node is up (docs/redirection.md#ebpf-choice).
  bool ebpf = false;
  std::string ebpf_reason;  // why eBPF is or is not used, for logs and /readyz
};

// What detect_backend leaves out with defer_host_report: the host's state
// of the backends not chosen (leftovers) and the warnings reading it gives,
// logged and returned.
Detection report_host_state(const DetectOptions& opts, BackendKind kind);

// Decision, first match wins:
//   FORCE_IPTABLES_BINARY=legacy|nft -> that iptables variant; always
//     decided afresh and overwrites the stored choice;
//   a choice stored this boot that fits the request -> reused (from_cache);
//   NATIVE_NFTABLES -> nftables, unless iptables artifacts exist (ISTIO_*
//     chains in either variant, or the istio-inpod-probes-v4/-v6 ipset),
//     then iptables until the node reboots (warning);
//   any `-A` rule in iptables-legacy-save -> iptables-legacy (rules are
//     counted, not lines, so empty chain declarations do not count:
//     docs/field-lessons.md#p18);
//   iptables-nft usable -> iptables-nft; iptables-legacy usable -> legacy;
//   otherwise Unavailable.
// In-pod mechanism, independent of the above:
//   a choice stored this boot -> kept (a stored eBPF choice whose gate now
//     fails is an error: those pods' programs cannot be managed, and
//     netfilter rules beside them would capture twice); a choice stored by
//     an agent that knew no eBPF counts as netfilter;
//   EbpfRequest::Off -> netfilter; Auto or On -> eBPF if the gate passes,
//     else netfilter (with On, a warning).
// Errors only for no usable backend; a run dir or boot ID that cannot be
// read or written gives a warning.
Result<Detection> detect_backend(const DetectOptions& opts);

}  // namespace ambient::redirect
