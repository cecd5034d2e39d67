// The in-pod eBPF programs (bpf/ambient_redirect.bpf.c) loaded into the
// kernel: once per agent process and configuration variant, then shared by
// every pod, so enrolling a pod only attaches (docs/redirection.md#ebpf).
// The kernel objects live as long as the Programs object; the tc filters
// that use them hold their own references.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>

#include "ambient_redirect_abi.h"
#include "lib/result.h"
#include "redirect/backend.h"

namespace ambient::redirect::ebpf {

// The tc programs, and TwLookup: the pod netns's sk_lookup program, which
// hands a SYN past a TIME_WAIT to ztunnel (docs/redirection.md#ebpf-time-wait).
enum class Program { Egress, Ingress, VifIngress, LoIngress, TwLookup };
inline constexpr Program kPrograms[] = {Program::Egress, Program::Ingress, Program::VifIngress,
                                        Program::LoIngress, Program::TwLookup};

// The kernel's name of a program: how a tc filter is told to be ours.
std::string_view program_name(Program p);
inline constexpr std::string_view kProgramNamePrefix = "amb_";

// What one loaded instance is configured with (amb_config in .rodata):
// the parts of a pod's configuration the programs themselves depend on.
// Inbound bypass and virtual interfaces only change where they attach.
struct Variant {
  bool dns_capture = false;
  bool ipv6 = false;
  std::optional<std::array<uint8_t, 4>> probe_snat_v4;
  std::optional<std::array<uint8_t, 16>> probe_snat_v6;
  // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads a defaulted <=>
  auto operator<=>(const Variant&) const = default;
};

// The variant `cfg` needs; an error names a probe address that is not an
// address of its family. An empty address means none.
Result<Variant> variant_for(const PodRedirectConfig& cfg);

struct LoadedProgram {
  int fd = -1;                   // owned by the Programs object
  uint32_t id = 0;               // the kernel's program id, what a tc query reports
  std::array<uint8_t, 8> tag{};  // the kernel's hash of its instructions
};

// One loaded instance of every program.
class ProgramSet {
 public:
  explicit ProgramSet(std::array<LoadedProgram, std::size(kPrograms)> progs) : progs_(progs) {}
  LoadedProgram get(Program p) const { return progs_[static_cast<size_t>(p)]; }

 private:
  std::array<LoadedProgram, std::size(kPrograms)> progs_;
};

using Counters = std::array<uint64_t, AMB_CNT_MAX>;
// A counter's name as metrics label it ("outbound", "drop_no_proxy", ...).
std::string_view counter_name(amb_counter c);

// The counters the program with kernel id `prog_id` (one of ours, found
// attached) adds to, summed over CPUs: every pod's programs of one agent
// share them. For a reader that loaded nothing itself (ambientctl inspect).
Result<Counters> counters_of_program(uint32_t prog_id);

class Programs {
 public:
  // Loads the variant of a default configuration at once, so a kernel that
  // refuses the programs is known when the agent starts. `owner` names this
  // agent (its node and run dir): the counters and DNS NAT map of an earlier
  // process with the same owner whose programs are still in the kernel are
  // taken over, so counts go on and DNS replies in flight keep their NAT.
  // `pin_root` is a bpffs directory: each pod's sk_lookup link is pinned
  // under it (link_dir()), so that it outlives this process. `first` is
  // the configuration most pods will have (the agent's defaults): its
  // variant is the one loaded now.
  // With an owner, every instance loaded is pinned in link_dir() too, and
  // an instance an earlier process of this build pinned this boot is
  // adopted as it is, without loading (docs/redirection.md#ebpf-loading);
  // pins of another build are removed. Without one nothing is pinned.
  static Result<std::shared_ptr<Programs>> load(const std::string& owner = "",
                                                std::string pin_root = kDefaultPinRoot,
                                                const PodRedirectConfig& first = {});
  static constexpr const char* kDefaultPinRoot = "/sys/fs/bpf";
  ~Programs();
  Programs(const Programs&) = delete;
  Programs& operator=(const Programs&) = delete;

  // The instance for `v`, loaded on first use (the verifier takes a few
  // milliseconds per instance) and kept. The pointer stays valid for the
  // Programs object's life.
  Result<const ProgramSet*> get(const Variant& v);
  // Whether the program with kernel id `id`, found attached, does exactly
  // what this process's `p` for `v` does: the same name and instructions,
  // the same configuration and owner, and this process's shared maps. Such
  // a program, an earlier agent's, is adopted rather than replaced. Cached
  // per id.
  Result<bool> adoptable(uint32_t id, Program p, const Variant& v);
  // The per-decision counters summed over CPUs, for every instance.
  Result<Counters> counters() const;
  // The DNS NAT map shared by every instance (tests read it).
  int dns_nat_fd() const;
  // Whether the instance load() made was an earlier process's, adopted.
  bool first_adopted() const;
  // Removes every instance's pins (an uninstall); how many instances. The
  // programs stay while pods' filters use them.
  Result<size_t> unpin();
  // Where this agent pins the pods' sk_lookup links: a directory of its
  // own under the pin root, named by its owner hash.
  const std::string& link_dir() const { return link_dir_; }

 private:
  struct Instance;
  Programs() = default;
  Result<std::unique_ptr<Instance>> load_instance(const Variant& v);
  Result<std::unique_ptr<Instance>> load_fresh(const Variant& v);
  Result<std::unique_ptr<Instance>> adopt_pinned(const Variant& v);
  Result<> pin(const Instance& instance, const std::string& dir) const;
  // What `v`'s .rodata holds: its configuration, the owner, the object.
  amb_config config_for(const Variant& v) const;

  mutable std::mutex mu_;
  uint64_t owner_ = 0;
  std::string link_dir_;
  std::map<Variant, std::unique_ptr<Instance>> instances_;
  std::map<uint32_t, bool> adoptable_;  // by program id
  // An earlier process's shared maps (counters, DNS NAT, TIME_WAIT
  // hand-offs), taken over by the first instance; -1 for none.
  std::array<int, 3> earlier_{-1, -1, -1};
  bool scanned_ = false;  // earlier_ looked for (only when nothing was adopted)
  // The first instance loaded: it created the maps every later one reuses
  // (counters, DNS NAT), so they outlive no instance that uses them.
  const Instance* maps_owner_ = nullptr;
};

}  // namespace ambient::redirect::ebpf
