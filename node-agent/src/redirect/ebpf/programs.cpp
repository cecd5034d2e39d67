#include "redirect/ebpf/programs.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <netinet/in.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <vector>

#include "lib/ip_address.h"
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
  }
  return "";
}

std::string_view counter_name(amb_counter c) {
  static constexpr std::string_view kNames[] = {
      "outbound",    "inbound",      "virtual_interface", "dns_query", "dns_reply",
      "looped",      "passed",       "drop_no_proxy",     "drop_loop", "drop_nontransparent",
      "drop_assign", "drop_rewrite", "time_wait_syn"};
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

Result<std::shared_ptr<Programs>> Programs::load() {
  static std::once_flag print_set;
  std::call_once(print_set, [] { libbpf_set_print(libbpf_print); });
  std::shared_ptr<Programs> programs(new Programs());
  AMBIENT_ASSIGN_OR_RETURN(Variant v, variant_for(PodRedirectConfig{}));
  AMBIENT_RETURN_IF_ERROR(programs->get(v));
  return programs;
}

// The kernel keeps a shared map while any loaded program uses it, so the
// instances may go in any order.
Programs::~Programs() = default;

Result<std::unique_ptr<Programs::Instance>> Programs::load_instance(const Variant& v) const {
  last_libbpf_warning.clear();
  Skeleton skel(ambient_redirect__open());
  if (!skel) return bpf_error("open the embedded eBPF object", errno);
  const amb_config c = config_of(v);
  std::memcpy(&skel->rodata->amb_cfg, &c, sizeof c);
  if (maps_owner_) {
    const ambient_redirect& owner = *maps_owner_->skel;
    for (auto [mine, theirs] : {std::pair{skel->maps.amb_stats, owner.maps.amb_stats},
                                std::pair{skel->maps.amb_dns_nat, owner.maps.amb_dns_nat}}) {
      if (int e = bpf_map__reuse_fd(mine, bpf_map__fd(theirs)); e != 0) {
        return bpf_error(std::string("share map ") + bpf_map__name(mine), e);
      }
    }
  }
  if (int e = ambient_redirect__load(skel.get()); e != 0) {
    return bpf_error("load the eBPF programs", e);
  }
  std::array<LoadedProgram, std::size(kPrograms)> progs{};
  for (Program p : kPrograms) {
    const int fd = bpf_program__fd(program_of(*skel, p));
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    if (int e = bpf_obj_get_info_by_fd(fd, &info, &len); e != 0) {
      return bpf_error("read the id of " + std::string(program_name(p)), e);
    }
    progs[static_cast<size_t>(p)] = {.fd = fd, .id = info.id};
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

int Programs::dns_nat_fd() const {
  std::lock_guard lk(mu_);
  return bpf_map__fd(maps_owner_->skel->maps.amb_dns_nat);
}

Result<Counters> Programs::counters() const {
  int fd = -1;
  {
    std::lock_guard lk(mu_);
    fd = bpf_map__fd(maps_owner_->skel->maps.amb_stats);
  }
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

}  // namespace ambient::redirect::ebpf
