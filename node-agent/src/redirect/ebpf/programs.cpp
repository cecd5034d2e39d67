#include "redirect/ebpf/programs.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include "lib/ip_address.h"
#include "lib/unique_fd.h"
#include "log/log.h"

#include "ambient_redirect.skel.h"

namespace ambient::redirect::ebpf {

namespace {

// libbpf's own lines (the verifier's log among them). They go to the debug
// log; the last warning of the thread is kept for the error that follows.
thread_local std::string last_libbpf_warning;

int libbpf_print(enum libbpf_print_level level, const char* format, va_list args) {
  char line[1024];
  std::vsnprintf(line, sizeof line, format, args);
  std::string_view text(line);
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  if (level == LIBBPF_WARN) last_libbpf_warning = text;
  log::debug("libbpf: {}", text);
  return 0;
}

// libbpf returns -errno.
Error bpf_error(std::string step, int err) {
  Error e = sys_error(std::move(step), err < 0 ? -err : err);
  if (!last_libbpf_warning.empty()) e.message += " (libbpf: " + last_libbpf_warning + ")";
  return e;
}

struct SkeletonDeleter {
  void operator()(ambient_redirect* s) const { ambient_redirect__destroy(s); }
};
using Skeleton = std::unique_ptr<ambient_redirect, SkeletonDeleter>;

bpf_program* program_of(ambient_redirect& s, Program p) {
  switch (p) {
    case Program::Egress:
      return s.progs.amb_egress;
    case Program::Ingress:
      return s.progs.amb_ingress;
    case Program::VifIngress:
      return s.progs.amb_vif_ingress;
    case Program::LoIngress:
      return s.progs.amb_lo_ingress;
    case Program::TwLookup:
      return s.progs.amb_tw_lookup;
  }
  return nullptr;
}

// Ports and marks are the in-pod contract (redirect/backend.h), the same
// numbers the netfilter backends write into their rules.
amb_config config_of(const Variant& v) {
  amb_config c{};
  c.ztunnel_mark = kZtunnelMark;
  c.inpod_mark = kInpodMark;
  c.mark_mask = kInpodMask;
  c.outbound_port = kOutboundPort;
  c.inbound_port = kInboundPlaintextPort;
  c.hbone_port = kInboundHbonePort;
  c.dns_port = kDnsPort;
  c.dns_capture = v.dns_capture;
  c.ipv6 = v.ipv6;
  if (v.probe_snat_v4) {
    c.has_probe_snat_v4 = 1;
    std::memcpy(&c.probe_snat_v4, v.probe_snat_v4->data(), 4);
  }
  if (v.probe_snat_v6) {
    c.has_probe_snat_v6 = 1;
    std::memcpy(c.probe_snat_v6, v.probe_snat_v6->data(), 16);
  }
  return c;
}

// FNV-1a: the same value from every build of the agent, which the owner
// must be across an upgrade (std::hash promises nothing of the kind).
uint64_t owner_hash(std::string_view owner) {
  if (owner.empty()) return 0;
  uint64_t h = 14695981039346656037ULL;
  for (const unsigned char c : owner) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

// A loaded program's info and the ids of the maps it uses.
struct ProgInfo {
  bpf_prog_info info{};
  std::vector<uint32_t> map_ids;
};

Result<ProgInfo> prog_info(int fd) {
  ProgInfo out;
  uint32_t len = sizeof out.info;
  if (bpf_obj_get_info_by_fd(fd, &out.info, &len) != 0) {
    return bpf_error("read a program's info", errno);
  }
  out.map_ids.resize(out.info.nr_map_ids);
  if (out.map_ids.empty()) return out;
  bpf_prog_info again{};
  again.nr_map_ids = static_cast<uint32_t>(out.map_ids.size());
  again.map_ids = reinterpret_cast<uintptr_t>(out.map_ids.data());
  len = sizeof again;
  if (bpf_obj_get_info_by_fd(fd, &again, &len) != 0) {
    return bpf_error("read a program's maps", errno);
  }
  out.map_ids.resize(std::min<size_t>(again.nr_map_ids, out.map_ids.size()));
  return out;
}

struct MapRef {
  UniqueFd fd;
  bpf_map_info info{};
  std::string_view name() const { return info.name; }
  bool is_rodata() const {
    const std::string_view n = name();
    return n.size() >= 7 && n.substr(n.size() - 7) == ".rodata";
  }
};

Result<MapRef> map_by_id(uint32_t id) {
  MapRef m;
  m.fd = UniqueFd(bpf_map_get_fd_by_id(id));
  if (!m.fd.valid()) return bpf_error("open map " + std::to_string(id), errno);
  uint32_t len = sizeof m.info;
  if (bpf_obj_get_info_by_fd(m.fd.get(), &m.info, &len) != 0) {
    return bpf_error("read map " + std::to_string(id), errno);
  }
  return m;
}

// The kernel's id of a map this process has open.
Result<uint32_t> map_id(const bpf_map* m) {
  bpf_map_info info{};
  uint32_t len = sizeof info;
  if (bpf_obj_get_info_by_fd(bpf_map__fd(m), &info, &len) != 0) {
    return bpf_error(std::string("read the id of map ") + bpf_map__name(m), errno);
  }
  return info.id;
}

// The one value of an array map such as .rodata.
Result<std::vector<uint8_t>> first_value(int fd, uint32_t value_size) {
  std::vector<uint8_t> v(value_size);
  const uint32_t key = 0;
  if (bpf_map_lookup_elem(fd, &key, v.data()) != 0) return bpf_error("read .rodata", errno);
  return v;
}

// The configuration a loaded instance was made with, from its .rodata.
std::optional<amb_config> config_of_program(const ProgInfo& p) {
  for (uint32_t id : p.map_ids) {
    auto m = map_by_id(id);
    if (!m || !m->is_rodata() || m->info.value_size < sizeof(amb_config)) continue;
    auto v = first_value(m->fd.get(), m->info.value_size);
    if (!v) continue;
    amb_config c{};
    std::memcpy(&c, v->data(), sizeof c);
    return c;
  }
  return std::nullopt;
}

// The maps every instance shares, by name, in the order Programs keeps them.
constexpr std::string_view kSharedMaps[] = {"amb_stats", "amb_dns_nat", "amb_tw_socks"};

std::array<bpf_map*, 3> shared_maps(ambient_redirect& s) {
  return {s.maps.amb_stats, s.maps.amb_dns_nat, s.maps.amb_tw_socks};
}

// The shared maps of the newest amb_lo_ingress in the kernel loaded for
// `owner` (an earlier process of this agent): fds in kSharedMaps' order,
// all -1 unless every one was found. Read-only: nothing is changed.
std::array<int, 3> earlier_maps(uint64_t owner) {
  uint32_t best = 0;
  ProgInfo best_info;
  for (uint32_t id = 0; bpf_prog_get_next_id(id, &id) == 0;) {
    UniqueFd fd(bpf_prog_get_fd_by_id(id));
    if (!fd.valid()) continue;  // gone meanwhile
    auto p = prog_info(fd.get());
    // amb_lo_ingress is the one that uses every shared map.
    if (!p || std::string_view(p->info.name) != program_name(Program::LoIngress)) continue;
    const auto c = config_of_program(*p);
    if (c && c->owner == owner && id > best) {
      best = id;
      best_info = std::move(*p);
    }
  }
  std::array<UniqueFd, 3> found;
  for (uint32_t id : best_info.map_ids) {
    auto m = map_by_id(id);
    if (!m) continue;
    for (size_t i = 0; i < found.size(); ++i) {
      if (m->name() == kSharedMaps[i] && !found[i].valid()) found[i] = std::move(m->fd);
    }
  }
  std::array<int, 3> out{-1, -1, -1};
  if (std::all_of(found.begin(), found.end(), [](const UniqueFd& fd) { return fd.valid(); })) {
    for (size_t i = 0; i < found.size(); ++i) out[i] = found[i].release();
    log::info(
        "eBPF: taking over the shared maps of this agent's earlier programs (amb_lo_ingress id {})",
        best);
  } else if (best != 0) {
    log::info(
        "eBPF: this agent's earlier programs (amb_lo_ingress id {}) have other maps; new maps",
        best);
  }
  return out;
}

template <size_t N>
Result<std::optional<std::array<uint8_t, N>>> parse_address(const std::string& text, int family,
                                                            std::string_view what) {
  if (text.empty()) return std::optional<std::array<uint8_t, N>>();
  auto parsed = IpAddress::parse(text);
  if (!parsed || parsed->unmapped().family != family) {
    return make_error(Errc::InvalidArgument,
                      std::string(what) + " \"" + text + "\" is not an address of its family");
  }
  std::array<uint8_t, N> out{};
  std::memcpy(out.data(), parsed->unmapped().bytes.data(), N);
  return std::optional(out);
}

}  // namespace

struct Programs::Instance {
  Skeleton skel;
  ProgramSet set;
};

std::string_view program_name(Program p) {
  switch (p) {
    case Program::Egress:
      return "amb_egress";
    case Program::Ingress:
      return "amb_ingress";
    case Program::VifIngress:
      return "amb_vif_ingress";
    case Program::LoIngress:
      return "amb_lo_ingress";
    case Program::TwLookup:
      return "amb_tw_lookup";
  }
  return "";
}

std::string_view counter_name(amb_counter c) {
  static constexpr std::string_view kNames[] = {"outbound",
                                                "inbound",
                                                "virtual_interface",
                                                "dns_query",
                                                "dns_reply",
                                                "looped",
                                                "passed",
                                                "drop_no_proxy",
                                                "drop_loop",
                                                "drop_nontransparent",
                                                "drop_assign",
                                                "drop_rewrite",
                                                "time_wait_syn",
                                                "time_wait_handoff",
                                                "drop_time_wait"};
  static_assert(std::size(kNames) == AMB_CNT_MAX, "a name for every counter of amb_counter");
  return c < AMB_CNT_MAX ? kNames[c] : "";
}

Result<Variant> variant_for(const PodRedirectConfig& cfg) {
  Variant v{.dns_capture = cfg.dns_capture, .ipv6 = cfg.ipv6};
  AMBIENT_ASSIGN_OR_RETURN(v.probe_snat_v4,
                           parse_address<4>(cfg.probe_snat_ipv4, AF_INET, "probe SNAT IPv4"));
  AMBIENT_ASSIGN_OR_RETURN(v.probe_snat_v6,
                           parse_address<16>(cfg.probe_snat_ipv6, AF_INET6, "probe SNAT IPv6"));
  return v;
}

Result<std::shared_ptr<Programs>> Programs::load(const std::string& owner, std::string pin_root,
                                                 const PodRedirectConfig& first) {
  static std::once_flag print_set;
  std::call_once(print_set, [] { libbpf_set_print(libbpf_print); });
  std::shared_ptr<Programs> programs(new Programs());
  programs->owner_ = owner_hash(owner);
  programs->link_dir_ =
      std::move(pin_root) + "/ambient/" + fmt::format("{:016x}", programs->owner_);
  if (programs->owner_ != 0) programs->earlier_ = earlier_maps(programs->owner_);
  AMBIENT_ASSIGN_OR_RETURN(Variant v, variant_for(first));
  AMBIENT_RETURN_IF_ERROR(programs->get(v));
  return programs;
}

// The kernel keeps a shared map while any loaded program uses it, so the
// instances may go in any order.
Programs::~Programs() {
  for (int fd : earlier_) {
    if (fd >= 0) ::close(fd);
  }
}

Result<std::unique_ptr<Programs::Instance>> Programs::load_instance(const Variant& v) {
  last_libbpf_warning.clear();
  Skeleton skel(ambient_redirect__open());
  if (!skel) return bpf_error("open the embedded eBPF object", errno);
  amb_config c = config_of(v);
  c.owner = owner_;
  std::memcpy(&skel->rodata->amb_cfg, &c, sizeof c);
  // Later instances share the first one's maps; the first takes over an
  // earlier process's, when they are still compatible.
  const bool earlier = !maps_owner_ && earlier_[0] >= 0;
  auto share = [&](bpf_map* mine, int theirs) -> Result<> {
    if (int e = bpf_map__reuse_fd(mine, theirs); e != 0) {
      return bpf_error(std::string("share map ") + bpf_map__name(mine), e);
    }
    return {};
  };
  const auto mine = shared_maps(*skel);
  if (maps_owner_) {
    const auto first = shared_maps(*maps_owner_->skel);
    for (size_t i = 0; i < mine.size(); ++i) {
      AMBIENT_RETURN_IF_ERROR(share(mine[i], bpf_map__fd(first[i])));
    }
  } else if (earlier) {
    for (size_t i = 0; i < mine.size(); ++i) AMBIENT_RETURN_IF_ERROR(share(mine[i], earlier_[i]));
  }
  if (int e = ambient_redirect__load(skel.get()); e != 0) {
    if (!earlier) return bpf_error("load the eBPF programs", e);
    // Maps of an older layout: start afresh, as with no earlier process.
    log::warn("eBPF: the earlier programs' maps do not fit these programs ({}); new maps",
              bpf_error("load", e).describe());
    for (int& fd : earlier_) ::close(std::exchange(fd, -1));
    return load_instance(v);
  }
  std::array<LoadedProgram, std::size(kPrograms)> progs{};
  for (Program p : kPrograms) {
    const int fd = bpf_program__fd(program_of(*skel, p));
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    if (int e = bpf_obj_get_info_by_fd(fd, &info, &len); e != 0) {
      return bpf_error("read the id of " + std::string(program_name(p)), e);
    }
    LoadedProgram& lp = progs[static_cast<size_t>(p)];
    lp = {.fd = fd, .id = info.id};
    std::memcpy(lp.tag.data(), info.tag, lp.tag.size());
  }
  return std::make_unique<Instance>(Instance{std::move(skel), ProgramSet(progs)});
}

Result<const ProgramSet*> Programs::get(const Variant& v) {
  std::lock_guard lk(mu_);
  if (auto it = instances_.find(v); it != instances_.end()) return &it->second->set;
  AMBIENT_ASSIGN_OR_RETURN(auto instance, load_instance(v));
  const Instance* loaded = instance.get();
  instances_.emplace(v, std::move(instance));
  if (!maps_owner_) maps_owner_ = loaded;
  log::debug("eBPF programs loaded: dns_capture={} ipv6={} (instance {} of this process)",
             v.dns_capture, v.ipv6, instances_.size());
  return &loaded->set;
}

Result<bool> Programs::adoptable(uint32_t id, Program p, const Variant& v) {
  AMBIENT_ASSIGN_OR_RETURN(const ProgramSet* set, get(v));
  std::lock_guard lk(mu_);
  if (auto it = adoptable_.find(id); it != adoptable_.end()) return it->second;
  const Instance& mine = *instances_.at(v);
  const LoadedProgram want = set->get(p);
  auto decide = [&]() -> Result<bool> {
    UniqueFd fd(bpf_prog_get_fd_by_id(id));
    if (!fd.valid()) return false;  // gone: nothing to adopt
    AMBIENT_ASSIGN_OR_RETURN(ProgInfo theirs, prog_info(fd.get()));
    if (std::string_view(theirs.info.name) != program_name(p) ||
        std::memcmp(theirs.info.tag, want.tag.data(), want.tag.size()) != 0) {
      return false;
    }
    std::vector<uint32_t> shared;
    for (bpf_map* m : shared_maps(*maps_owner_->skel)) {
      AMBIENT_ASSIGN_OR_RETURN(const uint32_t shared_id, map_id(m));
      shared.push_back(shared_id);
    }
    AMBIENT_ASSIGN_OR_RETURN(auto my_rodata,
                             first_value(bpf_map__fd(mine.skel->maps.rodata),
                                         bpf_map__value_size(mine.skel->maps.rodata)));
    for (uint32_t map_id : theirs.map_ids) {
      if (std::find(shared.begin(), shared.end(), map_id) != shared.end()) continue;
      AMBIENT_ASSIGN_OR_RETURN(MapRef m, map_by_id(map_id));
      if (!m.is_rodata()) return false;  // a map this process does not use
      AMBIENT_ASSIGN_OR_RETURN(auto rodata, first_value(m.fd.get(), m.info.value_size));
      if (rodata != my_rodata) return false;  // another configuration or owner
    }
    return true;
  };
  AMBIENT_ASSIGN_OR_RETURN(const bool ok, decide());
  adoptable_[id] = ok;
  return ok;
}

int Programs::dns_nat_fd() const {
  std::lock_guard lk(mu_);
  return bpf_map__fd(maps_owner_->skel->maps.amb_dns_nat);
}

namespace {

// The counters map behind `fd`, summed over CPUs.
Result<Counters> read_counters(int fd) {
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return bpf_error("count the possible CPUs", cpus);
  Counters out{};
  std::vector<uint64_t> per_cpu(static_cast<size_t>(cpus));
  for (uint32_t key = 0; key < AMB_CNT_MAX; ++key) {
    if (bpf_map_lookup_elem(fd, &key, per_cpu.data()) != 0) {
      return bpf_error("read eBPF counter " + std::string(counter_name(amb_counter(key))), errno);
    }
    for (uint64_t n : per_cpu) out[key] += n;
  }
  return out;
}

}  // namespace

Result<Counters> Programs::counters() const {
  int fd = -1;
  {
    std::lock_guard lk(mu_);
    fd = bpf_map__fd(maps_owner_->skel->maps.amb_stats);
  }
  return read_counters(fd);
}

Result<Counters> counters_of_program(uint32_t prog_id) {
  UniqueFd fd(bpf_prog_get_fd_by_id(prog_id));
  if (!fd.valid()) return bpf_error("open program " + std::to_string(prog_id), errno);
  AMBIENT_ASSIGN_OR_RETURN(ProgInfo info, prog_info(fd.get()));
  for (uint32_t id : info.map_ids) {
    AMBIENT_ASSIGN_OR_RETURN(MapRef m, map_by_id(id));
    if (m.name() == "amb_stats") return read_counters(m.fd.get());
  }
  return make_error(Errc::NotFound,
                    "program " + std::to_string(prog_id) + " uses no amb_stats map");
}

}  // namespace ambient::redirect::ebpf
