// Whether this node can redirect with eBPF (docs/redirection.md#ebpf-gate):
// checked once at start, in a scratch netns of the agent's own, before the
// backend is chosen. The decision is a pure function of the facts, so its
// logic is tested without a kernel.
#pragma once

#include <compare>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "redirect/ebpf/programs.h"

namespace ambient::redirect::ebpf {

struct KernelVersion {
  int major = 0;
  int minor = 0;
  // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads a defaulted <=>
  auto operator<=>(const KernelVersion&) const = default;
};

// "6.18.44-fc-v1272" gives 6.18; nullopt unless it starts with two numbers.
std::optional<KernelVersion> parse_kernel_release(std::string_view release);

// bpf_sk_assign takes SO_REUSEPORT sockets, which ztunnel uses by default,
// since 6.5; before, every assign to its listeners fails.
inline constexpr KernelVersion kMinKernel{6, 5};

// What the gate found, each check after the ones before it passed: a
// check not reached keeps its default, which the decision never reads.
struct GateFacts {
  std::string kernel_release;  // uname's release
  bool btf = false;            // the kernel's BTF, which CO-RE relocates against
  std::string pin_error;       // non-empty: the pin root is not usable (no bpffs there)
  std::string load_error;      // non-empty: the kernel refused to load the programs
  // The programs were an earlier agent's of this build, pinned this boot:
  // they passed this kernel's verifier then, and are taken without loading.
  bool adopted = false;
  std::string attach_error;  // non-empty: attaching them in a scratch netns failed
  // How long loading and the scratch attach took, for the log: the gate
  // is on the start-up path.
  double load_ms = 0;
  double attach_ms = 0;
};

struct GateDecision {
  bool usable = false;
  std::string reason;  // for the log and /readyz, either way
};

GateDecision decide(const GateFacts& facts);

struct GateResult {
  GateDecision decision;
  GateFacts facts;
  std::shared_ptr<Programs> programs;  // loaded when usable: the backend reuses them
};

// Gathers the facts on this kernel and decides. Loads the programs (the
// verifier proves every helper and program type they use) and attaches
// and detaches them on lo of a throwaway netns; the node's netns is never
// touched.
// `owner`, `pin_root` and `first` as Programs::load takes them.
GateResult check_gate(const std::string& owner = "",
                      const std::string& pin_root = Programs::kDefaultPinRoot,
                      const PodRedirectConfig& first = {});

}  // namespace ambient::redirect::ebpf
