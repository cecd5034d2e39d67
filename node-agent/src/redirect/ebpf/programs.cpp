#include "redirect/ebpf/programs.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "lib/ip_address.h"
#include "lib/unique_fd.h"
#include "log/log.h"
#include "redirect/ebpf/tw_link.h"

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
  // Compared byte for byte with an instance's .rodata: it has no padding.
  static_assert(std::has_unique_object_representations_v<amb_config>);
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
uint64_t fnv1a(const void* data, size_t size) {
  uint64_t h = 14695981039346656037ULL;
  for (const auto* c = static_cast<const unsigned char*>(data); size > 0; ++c, --size) {
    h ^= *c;
    h *= 1099511628211ULL;
  }
  return h;
}

uint64_t owner_hash(std::string_view owner) {
  return owner.empty() ? 0 : fnv1a(owner.data(), owner.size());
}

// The embedded object file's hash: two agents with the same one load the
// same instructions on the same kernel, whatever else differs in their
// builds.
uint64_t object_hash() {
  static const uint64_t hash = [] {
    size_t size = 0;
    const void* elf = ambient_redirect__elf_bytes(&size);
    return fnv1a(elf, size);
  }();
  return hash;
}

// An instance's pins: prog-<object hash>-<configuration hash> in the link
// dir, one file per program (docs/redirection.md#ebpf-loading).
constexpr std::string_view kPinPrefix = "prog-";

std::string instance_pin_dir(const std::string& link_dir, const amb_config& c) {
  return fmt::format("{}/{}{:016x}-{:016x}", link_dir, kPinPrefix, c.object, fnv1a(&c, sizeof c));
}

// Removes the pins of a directory of instance pins, then the directory.
Result<> remove_pin_dir(const std::string& dir) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) return errno == ENOENT ? Result<>() : sys_error("list " + dir);
  while (const dirent* e = ::readdir(d.get())) {
    const std::string_view name(e->d_name);
    if (name == "." || name == "..") continue;
    const std::string path = dir + "/" + std::string(name);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return sys_error("unpin " + path);
  }
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) return sys_error("remove " + dir);
  return {};
}

// The instance pin directories in `link_dir` for which `remove` says so
// are removed; how many.
Result<size_t> remove_pin_dirs(const std::string& link_dir,
                               const std::function<bool(std::string_view)>& remove) {
  std::vector<std::string> found;
  {
    std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(link_dir.c_str()), ::closedir);
    if (!d) return errno == ENOENT ? Result<size_t>(0) : sys_error("list " + link_dir);
    while (const dirent* e = ::readdir(d.get())) {
      const std::string_view name(e->d_name);
      if (name.rfind(kPinPrefix, 0) == 0 && remove(name)) found.emplace_back(name);
    }
  }
  for (const std::string& name : found) {
    AMBIENT_RETURN_IF_ERROR(remove_pin_dir(link_dir + "/" + name));
  }
  return found.size();
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

// What this process uses of program `fd`, whose info is `info`.
LoadedProgram loaded_program(int fd, const ProgInfo& info) {
  LoadedProgram lp{.fd = fd, .id = info.info.id};
  std::memcpy(lp.tag.data(), info.info.tag, lp.tag.size());
  return lp;
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
Result<uint32_t> map_id_of_fd(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return bpf_error("read a map's id", errno);
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
  Skeleton skel;               // null for an instance adopted from its pins
  std::vector<UniqueFd> held;  // an adopted instance's programs and maps
  bool adopted = false;
  ProgramSet set{{}};
  std::array<int, 3> shared{-1, -1, -1};  // kSharedMaps' order
  int rodata = -1;
  uint32_t rodata_size = 0;
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
  AMBIENT_ASSIGN_OR_RETURN(Variant v, variant_for(first));
  AMBIENT_RETURN_IF_ERROR(programs->get(v));
  if (programs->owner_ != 0) {
    // Another build's pins: its programs stay while pods use them, and
    // each pod's are replaced at its next check.
    const std::string mine = fmt::format("{}{:016x}-", kPinPrefix, object_hash());
    auto removed = remove_pin_dirs(programs->link_dir_,
                                   [&](std::string_view name) { return name.rfind(mine, 0) != 0; });
    if (!removed) log::warn("eBPF: {}", removed.error().describe());
    if (removed && *removed > 0)
      log::info("eBPF: unpinned {} instances of another build", *removed);
  }
  return programs;
}

// The kernel keeps a shared map while any loaded program uses it, so the
// instances may go in any order.
Programs::~Programs() {
  for (int fd : earlier_) {
    if (fd >= 0) ::close(fd);
  }
}

amb_config Programs::config_for(const Variant& v) const {
  amb_config c = config_of(v);
  c.owner = owner_;
  c.object = object_hash();
  return c;
}

Result<std::unique_ptr<Programs::Instance>> Programs::load_instance(const Variant& v) {
  if (owner_ != 0) {
    AMBIENT_ASSIGN_OR_RETURN(auto adopted, adopt_pinned(v));
    if (adopted) return adopted;
    if (!maps_owner_ && !scanned_) {
      earlier_ = earlier_maps(owner_);
      scanned_ = true;
    }
  }
  AMBIENT_ASSIGN_OR_RETURN(auto loaded, load_fresh(v));
  if (owner_ != 0) {
    if (auto pinned = pin(*loaded, instance_pin_dir(link_dir_, config_for(v))); !pinned) {
      log::warn("eBPF: {} (the next agent start loads them again)", pinned.error().describe());
    }
  }
  return loaded;
}

Result<std::unique_ptr<Programs::Instance>> Programs::load_fresh(const Variant& v) {
  last_libbpf_warning.clear();
  Skeleton skel(ambient_redirect__open());
  if (!skel) return bpf_error("open the embedded eBPF object", errno);
  const amb_config c = config_for(v);
  std::memcpy(&skel->rodata->amb_cfg, &c, sizeof c);
  // Later instances share the first one's maps; the first takes over an
  // earlier process's, when they are still compatible.
  const bool earlier = !maps_owner_ && earlier_[0] >= 0;
  const auto mine = shared_maps(*skel);
  for (size_t i = 0; i < mine.size(); ++i) {
    const int theirs = maps_owner_ ? maps_owner_->shared[i] : earlier ? earlier_[i] : -1;
    if (theirs < 0) continue;
    if (int e = bpf_map__reuse_fd(mine[i], theirs); e != 0) {
      return bpf_error(std::string("share map ") + bpf_map__name(mine[i]), e);
    }
  }
  if (int e = ambient_redirect__load(skel.get()); e != 0) {
    if (!earlier) return bpf_error("load the eBPF programs", e);
    // Maps of an older layout: start afresh, as with no earlier process.
    log::warn("eBPF: the earlier programs' maps do not fit these programs ({}); new maps",
              bpf_error("load", e).describe());
    for (int& fd : earlier_) ::close(std::exchange(fd, -1));
    return load_fresh(v);
  }
  auto instance = std::make_unique<Instance>();
  std::array<LoadedProgram, std::size(kPrograms)> progs{};
  for (Program p : kPrograms) {
    const int fd = bpf_program__fd(program_of(*skel, p));
    AMBIENT_ASSIGN_OR_RETURN(
        ProgInfo info, prog_info(fd).context("read the id of " + std::string(program_name(p))));
    progs[static_cast<size_t>(p)] = loaded_program(fd, info);
  }
  instance->set = ProgramSet(progs);
  for (size_t i = 0; i < mine.size(); ++i) instance->shared[i] = bpf_map__fd(mine[i]);
  instance->rodata = bpf_map__fd(skel->maps.rodata);
  instance->rodata_size = bpf_map__value_size(skel->maps.rodata);
  instance->skel = std::move(skel);
  return instance;
}

// Pinned into a directory of its own under a temporary name, then renamed:
// a reader finds all of an instance's pins or none.
Result<> Programs::pin(const Instance& instance, const std::string& dir) const {
  const std::string tmp = dir + "-tmp";  // bpffs allows no dot in a name
  AMBIENT_RETURN_IF_ERROR(remove_pin_dir(tmp));
  AMBIENT_RETURN_IF_ERROR(make_pin_dirs(tmp).context("pin the eBPF programs"));
  for (Program p : kPrograms) {
    const std::string path = tmp + "/" + std::string(program_name(p));
    if (bpf_obj_pin(instance.set.get(p).fd, path.c_str()) != 0) {
      Error e = sys_error("pin " + std::string(program_name(p)) + " at " + path);
      (void)remove_pin_dir(tmp);
      return e;
    }
  }
  AMBIENT_RETURN_IF_ERROR(remove_pin_dir(dir));
  if (::rename(tmp.c_str(), dir.c_str()) != 0) {
    Error e = sys_error("rename " + tmp + " to " + dir);
    (void)remove_pin_dir(tmp);
    return e;
  }
  return {};
}

// An earlier process's instance of `v`, from its pins, when every program
// is there and provably what loading would give: our name, .rodata holding
// exactly this configuration (owner and object hash included; a kernel
// object does not outlive the boot, so the kernel is the same too), and no
// maps but that .rodata and the three shared ones, the same ones as this
// process's other instances. Null otherwise; nothing is changed either way.
Result<std::unique_ptr<Programs::Instance>> Programs::adopt_pinned(const Variant& v) {
  const amb_config want = config_for(v);
  const std::string dir = instance_pin_dir(link_dir_, want);
  auto instance = std::make_unique<Instance>();
  std::array<LoadedProgram, std::size(kPrograms)> progs{};
  std::array<uint32_t, 3> shared_ids{};
  uint32_t rodata_id = 0;
  auto reject = [&](const std::string& why) -> std::unique_ptr<Instance> {
    log::info("eBPF: not adopting the pinned instance {}: {}; loading", dir, why);
    return nullptr;
  };
  for (Program p : kPrograms) {
    const std::string path = dir + "/" + std::string(program_name(p));
    UniqueFd fd(bpf_obj_get(path.c_str()));
    if (!fd.valid()) {
      if (errno == ENOENT && p == kPrograms[0]) return std::unique_ptr<Instance>();  // none pinned
      return reject(sys_error("open " + path).describe());
    }
    auto info = prog_info(fd.get());
    if (!info) return reject(info.error().describe());
    if (std::string_view(info->info.name) != program_name(p)) {
      return reject(path + " holds " + info->info.name);
    }
    for (uint32_t id : info->map_ids) {
      if (id == rodata_id ||
          std::find(shared_ids.begin(), shared_ids.end(), id) != shared_ids.end()) {
        continue;
      }
      auto m = map_by_id(id);
      if (!m) return reject(m.error().describe());
      if (m->is_rodata()) {
        auto value = first_value(m->fd.get(), m->info.value_size);
        if (!value) return reject(value.error().describe());
        if (rodata_id != 0 || value->size() < sizeof want ||
            std::memcmp(value->data(), &want, sizeof want) != 0) {
          return reject(std::string(program_name(p)) + " has another configuration or build");
        }
        rodata_id = id;
        instance->rodata = m->fd.get();
        instance->rodata_size = m->info.value_size;
      } else {
        const auto* named = std::find(std::begin(kSharedMaps), std::end(kSharedMaps), m->name());
        const auto i = static_cast<size_t>(named - std::begin(kSharedMaps));
        if (named == std::end(kSharedMaps) || shared_ids[i] != 0) {
          return reject(std::string(program_name(p)) + " uses a map " + std::string(m->name()) +
                        " this build does not share");
        }
        shared_ids[i] = id;
        instance->shared[i] = m->fd.get();
      }
      instance->held.push_back(std::move(m->fd));
    }
    progs[static_cast<size_t>(p)] = loaded_program(fd.get(), *info);
    instance->held.push_back(std::move(fd));
  }
  if (rodata_id == 0 || std::count(shared_ids.begin(), shared_ids.end(), 0u) != 0) {
    return reject("its programs do not use every map ours do");
  }
  if (maps_owner_) {
    for (size_t i = 0; i < shared_ids.size(); ++i) {
      AMBIENT_ASSIGN_OR_RETURN(const uint32_t ours, map_id_of_fd(maps_owner_->shared[i]));
      if (ours != shared_ids[i]) return reject("its shared maps are not this process's");
    }
  }
  instance->set = ProgramSet(progs);
  instance->adopted = true;
  log::info("eBPF: adopted the instance pinned at {} (amb_lo_ingress id {}) without loading", dir,
            instance->set.get(Program::LoIngress).id);
  return instance;
}

Result<const ProgramSet*> Programs::get(const Variant& v) {
  std::lock_guard lk(mu_);
  if (auto it = instances_.find(v); it != instances_.end()) return &it->second->set;
  AMBIENT_ASSIGN_OR_RETURN(auto instance, load_instance(v));
  const Instance* loaded = instance.get();
  instances_.emplace(v, std::move(instance));
  if (!maps_owner_) maps_owner_ = loaded;
  log::debug("eBPF programs {}: dns_capture={} ipv6={} (instance {} of this process)",
             loaded->adopted ? "adopted" : "loaded", v.dns_capture, v.ipv6, instances_.size());
  return &loaded->set;
}

bool Programs::first_adopted() const {
  std::lock_guard lk(mu_);
  return maps_owner_ && maps_owner_->adopted;
}

Result<size_t> Programs::unpin() {
  std::lock_guard lk(mu_);
  return remove_pin_dirs(link_dir_, [](std::string_view) { return true; });
}

Result<bool> Programs::adoptable(uint32_t id, Program p, const Variant& v) {
  AMBIENT_ASSIGN_OR_RETURN(const ProgramSet* set, get(v));
  const LoadedProgram want = set->get(p);
  if (id == want.id) return true;
  std::lock_guard lk(mu_);
  if (auto it = adoptable_.find(id); it != adoptable_.end()) return it->second;
  const Instance& mine = *instances_.at(v);
  auto decide = [&]() -> Result<bool> {
    UniqueFd fd(bpf_prog_get_fd_by_id(id));
    if (!fd.valid()) return false;  // gone: nothing to adopt
    AMBIENT_ASSIGN_OR_RETURN(ProgInfo theirs, prog_info(fd.get()));
    if (std::string_view(theirs.info.name) != program_name(p) ||
        std::memcmp(theirs.info.tag, want.tag.data(), want.tag.size()) != 0) {
      return false;
    }
    std::vector<uint32_t> shared;
    for (int map_fd : maps_owner_->shared) {
      AMBIENT_ASSIGN_OR_RETURN(const uint32_t shared_id, map_id_of_fd(map_fd));
      shared.push_back(shared_id);
    }
    AMBIENT_ASSIGN_OR_RETURN(auto my_rodata, first_value(mine.rodata, mine.rodata_size));
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
  return maps_owner_->shared[1];
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
    fd = maps_owner_->shared[0];
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
