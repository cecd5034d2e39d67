#include "redirect/ebpf/gate.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include <charconv>
#include <chrono>

#include "lib/unique_fd.h"
#include "netns/netns.h"
#include "redirect/ebpf/tc.h"
#include "redirect/ebpf/tw_link.h"

namespace ambient::redirect::ebpf {

namespace {

constexpr const char* kVmlinuxBtf = "/sys/kernel/btf/vmlinux";

std::string version_text(KernelVersion v) {
  return std::to_string(v.major) + "." + std::to_string(v.minor);
}

// Both of the programs' tc hook kinds on lo of a new netns, and the
// netns's sk_lookup link, then gone.
Result<> try_attach(const ProgramSet& set) {
  return netns::run_in_new_netns([&]() -> Result<> {
    UniqueFd self(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!self.valid()) return sys_error("open the scratch netns");
    UniqueFd link(
        bpf_link_create(set.get(Program::TwLookup).fd, self.get(), BPF_SK_LOOKUP, nullptr));
    if (!link.valid()) return sys_error("attach amb_tw_lookup (sk_lookup) to the scratch netns");
    const Interface lo{.ifindex = 1, .name = "lo", .loopback = true};
    AMBIENT_RETURN_IF_ERROR(ensure_clsact(lo));
    for (auto [hook, prog] :
         {std::pair{Hook::Ingress, Program::LoIngress}, std::pair{Hook::Egress, Program::Egress}}) {
      AMBIENT_RETURN_IF_ERROR(attach(lo, hook, set.get(prog).fd));
      AMBIENT_ASSIGN_OR_RETURN(uint32_t id, attached_program(lo, hook));
      if (id != set.get(prog).id) {
        return make_error(Errc::Internal, "the filter on lo " + std::string(hook_name(hook)) +
                                              " does not hold the program attached");
      }
      AMBIENT_ASSIGN_OR_RETURN(bool detached, detach_ours(lo, hook));
      if (!detached) return make_error(Errc::Internal, "our filter could not be found to detach");
    }
    return {};
  });
}

}  // namespace

std::optional<KernelVersion> parse_kernel_release(std::string_view release) {
  KernelVersion v;
  const char* end = release.data() + release.size();
  auto [p, ec] = std::from_chars(release.data(), end, v.major);
  if (ec != std::errc() || p == end || *p != '.') return std::nullopt;
  auto [q, ec2] = std::from_chars(p + 1, end, v.minor);
  if (ec2 != std::errc() || q == p + 1) return std::nullopt;
  return v;
}

GateDecision decide(const GateFacts& f) {
  const auto kernel = parse_kernel_release(f.kernel_release);
  if (!kernel) return {false, "kernel release \"" + f.kernel_release + "\" is not understood"};
  if (*kernel < kMinKernel) {
    return {false, "kernel " + version_text(*kernel) + " is older than " +
                       version_text(kMinKernel) +
                       ": bpf_sk_assign refuses ztunnel's SO_REUSEPORT listeners"};
  }
  if (!f.btf) return {false, std::string("the kernel has no BTF (") + kVmlinuxBtf + ")"};
  if (!f.pin_error.empty()) return {false, f.pin_error};
  if (!f.load_error.empty()) return {false, "the programs do not load: " + f.load_error};
  if (!f.attach_error.empty()) return {false, "attach failed: " + f.attach_error};
  return {true,
          "kernel " + version_text(*kernel) + ", programs " +
              (f.adopted ? "adopted (pinned this boot by an agent of this build)" : "loaded") +
              " and attached in a scratch netns"};
}

GateResult check_gate(const std::string& owner, const std::string& pin_root,
                      const PodRedirectConfig& first) {
  GateResult out;
  utsname u{};
  if (::uname(&u) == 0) out.facts.kernel_release = u.release;
  struct stat st {};
  out.facts.btf = ::stat(kVmlinuxBtf, &st) == 0;
  const auto kernel = parse_kernel_release(out.facts.kernel_release);
  if (auto pin = check_pin_root(pin_root); !pin) out.facts.pin_error = pin.error().describe();
  if (kernel && *kernel >= kMinKernel && out.facts.btf && out.facts.pin_error.empty()) {
    using Clock = std::chrono::steady_clock;
    using Ms = std::chrono::duration<double, std::milli>;
    const auto load_start = Clock::now();
    auto loaded = Programs::load(owner, pin_root, first);
    const auto attach_start = Clock::now();
    out.facts.load_ms = Ms(attach_start - load_start).count();
    if (!loaded) {
      out.facts.load_error = loaded.error().describe();
    } else {
      auto variant = variant_for(first);
      auto set = variant ? (*loaded)->get(*variant) : Result<const ProgramSet*>(variant.error());
      auto attached = set ? try_attach(**set) : Result<>(set.error());
      out.facts.attach_ms = Ms(Clock::now() - attach_start).count();
      if (!attached) out.facts.attach_error = attached.error().describe();
      out.facts.adopted = (*loaded)->first_adopted();
      out.programs = *loaded;
    }
  }
  out.decision = decide(out.facts);
  if (!out.decision.usable) out.programs.reset();
  return out;
}

}  // namespace ambient::redirect::ebpf
