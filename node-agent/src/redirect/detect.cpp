#include "redirect/detect.h"

#include <fcntl.h>
#include <nftables/libnftables.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "lib/unique_fd.h"
#include "log/log.h"
#include "netns/netns.h"
#include "process/process.h"

namespace ambient::redirect {

namespace {

using Reader = std::function<Result<std::string>(const std::vector<std::string>&)>;

constexpr std::string_view kLegacy = "iptables-legacy";
constexpr std::string_view kNft = "iptables-nft";

std::string first_line(std::string_view text) {
  auto s = std::string(text.substr(0, text.find('\n')));
  while (!s.empty() && (s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

// What one `*-save` dump tells us.
struct SaveDump {
  bool ran = false;
  std::string error;                   // why it did not run
  int rules = 0;                       // `-A` lines; declarations do not count (P18)
  std::set<std::string> istio_tables;  // tables declaring an ISTIO_* chain
};

SaveDump parse_save(const Result<std::string>& out) {
  SaveDump d;
  if (!out) {
    d.error = out.error().describe();
    return d;
  }
  d.ran = true;
  std::istringstream in(*out);
  std::string line, table;
  while (std::getline(in, line)) {
    if (line.rfind('*', 0) == 0) table = line.substr(1);
    if (line.rfind("-A ", 0) == 0) ++d.rules;
    if (line.rfind(":ISTIO_", 0) == 0 || line.rfind("-A ISTIO_", 0) == 0) {
      d.istio_tables.insert(table);
    }
  }
  return d;
}

// One iptables family ("iptables-legacy" or "iptables-nft"), v4 and v6.
struct Family {
  std::string name;
  bool usable = false;
  std::string why_unusable;
  std::string version;  // "1.8.9", or "" when --version was rejected
  SaveDump v4, v6;
  int rules() const { return v4.rules + v6.rules; }
  bool has_istio() const { return !v4.istio_tables.empty() || !v6.istio_tables.empty(); }
};

Family read_family(const Reader& read, std::string_view name, std::vector<std::string>& warnings) {
  Family f{.name = std::string(name)};
  const bool want_nft = name == kNft;
  const std::string save = std::string(name) + "-save";
  const std::string save6 = "ip6" + save.substr(2);  // iptables-nft-save -> ip6tables-nft-save

  auto version = read({save, "--version"});
  f.v4 = parse_save(read({save}));
  f.v6 = parse_save(read({save6}));

  bool is_nft = false;
  if (version) {
    static const std::regex kVersion(R"(v([0-9]+(\.[0-9]+)+))");
    std::smatch m;
    if (std::regex_search(*version, m, kVersion)) f.version = m[1];
    is_nft = version->find("nf_tables") != std::string::npos;
  }
  // A save binary that rejects --version is an old legacy one (upstream
  // takes it as legacy 0.0.0); nft variants always answer.
  if (!f.v4.ran) {
    f.why_unusable = f.v4.error;
  } else if (want_nft && !version) {
    f.why_unusable = save + " --version failed: " + version.error().describe();
  } else if (want_nft != is_nft) {
    f.why_unusable = save + " --version says \"" + first_line(*version) + "\", not " +
                     (want_nft ? "nf_tables" : "legacy");
  } else {
    f.usable = true;
  }
  if (f.usable && !f.v6.ran) {
    warnings.push_back(save6 + " did not run (" + f.v6.error + "); IPv6 state not read");
  }
  return f;
}

struct HostState {
  Family legacy, nft;
  bool nft_listed = false;
  std::vector<std::string> nft_tables;  // "inet istio-ambient-nat" (ours only)
  std::vector<std::string> probe_ipsets;
};

HostState read_host(const Reader& read, bool want_ipsets, std::vector<std::string>& warnings) {
  HostState st;
  st.legacy = read_family(read, kLegacy, warnings);
  st.nft = read_family(read, kNft, warnings);

  auto tables = read({"nft", "list", "tables"});
  if (tables) {
    st.nft_listed = true;
    std::istringstream in(*tables);
    std::string word, family, name;
    while (in >> word) {
      if (word != "table" || !(in >> family >> name)) continue;
      if (name.rfind("istio-ambient-", 0) == 0) st.nft_tables.push_back(family + " " + name);
    }
  } else {
    log::debug("redirect detect: nft list tables: {}", tables.error().describe());
  }

  if (want_ipsets) {
    // `ipset list -n` only lists names (netlink IPSET_CMD_LIST); it creates
    // nothing. Spec node-agent.md §15.2: an error means "proceed, warn".
    auto sets = read({"ipset", "list", "-n"});
    if (sets) {
      std::istringstream in(*sets);
      std::string name;
      while (in >> name) {
        if (name == "istio-inpod-probes-v4" || name == "istio-inpod-probes-v6") {
          st.probe_ipsets.push_back(name);
        }
      }
    } else {
      warnings.push_back("cannot list ipsets (" + sets.error().describe() +
                         "); assuming no iptables probe sets");
    }
  }
  return st;
}

std::vector<std::string> istio_chain_findings(const Family& f) {
  std::vector<std::string> out;
  auto one = [&](const std::string& bin, const SaveDump& d) {
    if (d.istio_tables.empty()) return;
    out.push_back(bin + ": ISTIO_* chains in " +
                  join({d.istio_tables.begin(), d.istio_tables.end()}, ", "));
  };
  one(f.name, f.v4);
  one("ip6" + f.name.substr(2), f.v6);
  return out;
}

std::string family_text(const Family& f) {
  return f.name + (f.version.empty() ? "" : " v" + f.version);
}

struct Decision {
  BackendKind kind;
  std::string reason;
};

Result<Decision> choose_iptables(const HostState& st, std::vector<std::string>& warnings) {
  if (st.legacy.usable && st.legacy.rules() > 0) {
    if (st.nft.usable && st.nft.rules() > 0) {
      warnings.push_back("rules exist in both iptables-legacy (" +
                         std::to_string(st.legacy.rules()) + ") and iptables-nft (" +
                         std::to_string(st.nft.rules()) +
                         "); chose legacy; set FORCE_IPTABLES_BINARY to override");
    }
    return Decision{BackendKind::IptablesLegacy, "iptables-legacy-save shows " +
                                                     std::to_string(st.legacy.rules()) +
                                                     " rules (" + family_text(st.legacy) + ")"};
  }
  if (st.nft.usable) {
    return Decision{BackendKind::IptablesNft,
                    "no rules in iptables-legacy; " + family_text(st.nft) + " is usable"};
  }
  if (st.legacy.usable) {
    return Decision{BackendKind::IptablesLegacy, "iptables-nft is not usable (" +
                                                     st.nft.why_unusable + "); using " +
                                                     family_text(st.legacy)};
  }
  Error e = make_error(Errc::Unavailable,
                       "no usable iptables: iptables-legacy: " + st.legacy.why_unusable +
                           "; iptables-nft: " + st.nft.why_unusable);
  e.retryable = false;
  return e;
}

Result<Decision> decide(const DetectOptions& opts, const HostState& st,
                        std::vector<std::string>& warnings) {
  const auto& force = opts.force_iptables_binary;
  if (!force.empty()) {
    const Family& f = force == "legacy" ? st.legacy : st.nft;
    if (!f.usable) {
      warnings.push_back("FORCE_IPTABLES_BINARY=" + force + " but " + f.name +
                         " does not look usable: " + f.why_unusable);
    }
    if (opts.native_nftables) {
      warnings.push_back("FORCE_IPTABLES_BINARY=" + force + " overrides NATIVE_NFTABLES=true");
    }
    return Decision{force == "legacy" ? BackendKind::IptablesLegacy : BackendKind::IptablesNft,
                    "FORCE_IPTABLES_BINARY=" + force};
  }
  if (!opts.native_nftables) return choose_iptables(st, warnings);

  std::vector<std::string> artifacts = istio_chain_findings(st.legacy);
  for (auto& s : istio_chain_findings(st.nft)) artifacts.push_back(std::move(s));
  for (const auto& s : st.probe_ipsets) artifacts.push_back("ipset " + s);
  if (artifacts.empty()) {
    return Decision{BackendKind::Nftables, "NATIVE_NFTABLES=true and no iptables artifacts"};
  }
  // Stay with the family that holds our chains; with chains in both or only
  // the ipset, choose as if nftables had not been requested.
  Result<Decision> d = Decision{};
  if (st.legacy.has_istio() && !st.nft.has_istio() && st.legacy.usable) {
    d = Decision{BackendKind::IptablesLegacy, ""};
  } else if (st.nft.has_istio() && !st.legacy.has_istio() && st.nft.usable) {
    d = Decision{BackendKind::IptablesNft, ""};
  } else {
    d = choose_iptables(st, warnings);
  }
  if (!d) {
    return std::move(d).error().with("NATIVE_NFTABLES=true but iptables artifacts exist (" +
                                     join(artifacts, "; ") + ")");
  }
  d->reason = "NATIVE_NFTABLES=true but iptables artifacts exist (" + join(artifacts, "; ") +
              "): staying on " + std::string(backend_name(d->kind)) + " until the node reboots";
  warnings.push_back(d->reason + "; reboot the node to complete the migration to nftables");
  return d;
}

std::vector<std::string> leftovers(const HostState& st, BackendKind chosen) {
  std::vector<std::string> out;
  if (chosen != BackendKind::IptablesLegacy) {
    for (auto& s : istio_chain_findings(st.legacy)) out.push_back(std::move(s));
  }
  if (chosen != BackendKind::IptablesNft) {
    for (auto& s : istio_chain_findings(st.nft)) out.push_back(std::move(s));
  }
  if (chosen != BackendKind::Nftables) {
    for (const auto& t : st.nft_tables) out.push_back("nftables: table " + t);
  } else {
    for (const auto& s : st.probe_ipsets) out.push_back("ipset: " + s);
  }
  return out;
}

Result<std::string> read_boot_id(const std::string& path) {
  std::ifstream in(path);
  std::string id;
  if (!in || !std::getline(in, id)) return sys_error("read " + path);
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  if (id.empty()) return make_error(Errc::Internal, path + " is empty");
  return id;
}

struct Stored {
  std::string boot_id;
  BackendKind kind;
  std::string reason;
};

// nullopt when there is no file; an error when it cannot be used.
Result<std::optional<Stored>> load_choice(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec) && !ec) return std::optional<Stored>();
  std::ifstream in(path);
  if (!in) return make_error(Errc::Internal, "cannot open " + path);
  std::stringstream buf;
  buf << in.rdbuf();
  auto doc = nlohmann::json::parse(buf.str(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return make_error(Errc::InvalidArgument, path + " is not a JSON object");
  }
  auto str = [&](const char* key) -> std::string {
    auto it = doc.find(key);
    return it != doc.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  auto kind = backend_from_name(str("backend"));
  if (!kind) return std::move(kind).error().with(path);
  return std::optional<Stored>(Stored{str("boot_id"), *kind, str("reason")});
}

// Temp file in the same directory, fsync, rename: a reader sees the old or
// the new decision, never half of one.
Result<> store_choice(const std::string& dir, const std::string& path, const Stored& s) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error(Errc::Internal, "create " + dir + ": " + ec.message());
  nlohmann::json doc = {
      {"boot_id", s.boot_id}, {"backend", std::string(backend_name(s.kind))}, {"reason", s.reason}};
  const std::string text = doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd.valid()) return sys_error("create " + tmp);
    size_t done = 0;
    while (done < text.size()) {
      ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        Error e = sys_error("write " + tmp);
        ::unlink(tmp.c_str());
        return e;
      }
      done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0) {
      Error e = sys_error("fsync " + tmp);
      ::unlink(tmp.c_str());
      return e;
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Error e = sys_error("rename " + tmp + " to " + path);
    ::unlink(tmp.c_str());
    return e;
  }
  return {};
}

// Does a choice made earlier this boot serve the current request? With
// NATIVE_NFTABLES any earlier choice does: an earlier iptables choice means
// pods of this boot may carry iptables rules, so nftables waits for a
// reboot (§15.2). Without it, only an iptables choice does.
bool fits(BackendKind stored, bool native_nftables) {
  return native_nftables || stored != BackendKind::Nftables;
}

Result<std::string> default_read(const std::vector<std::string>& argv) {
  auto r = run_checked({.argv = argv, .timeout = std::chrono::milliseconds(10000)});
  if (!r) return std::move(r).error();
  return std::move(r->out);
}

}  // namespace

std::string_view backend_name(BackendKind kind) {
  switch (kind) {
    case BackendKind::IptablesLegacy:
      return "iptables-legacy";
    case BackendKind::IptablesNft:
      return "iptables-nft";
    case BackendKind::Nftables:
      return "nftables";
  }
  return "unknown";
}

Result<BackendKind> backend_from_name(std::string_view name) {
  for (auto k : {BackendKind::IptablesLegacy, BackendKind::IptablesNft, BackendKind::Nftables}) {
    if (backend_name(k) == name) return k;
  }
  return make_error(Errc::InvalidArgument, "unknown backend \"" + std::string(name) + "\"");
}

namespace {

// The state of the backends not chosen, from what read_host saw.
void add_leftovers(const DetectOptions& opts, const HostState& st, Detection& det) {
  det.leftovers = leftovers(st, det.kind);
  if (opts.native_nftables && !st.nft_listed) {
    det.warnings.push_back(
        "cannot list nftables tables with `nft list tables`; "
        "leftover istio-ambient-* tables were not checked");
  }
}

void log_findings(const Detection& det) {
  for (const auto& w : det.warnings) log::warn("redirect backend: {}", w);
  for (const auto& l : det.leftovers) {
    log::warn("redirect backend: leftover state of a backend not in use: {}", l);
  }
}

}  // namespace

Result<Detection> detect_backend(const DetectOptions& opts) {
  const auto& force = opts.force_iptables_binary;
  if (!force.empty() && force != "legacy" && force != "nft") {
    Error e = make_error(
        Errc::InvalidArgument,
        "FORCE_IPTABLES_BINARY must be \"legacy\", \"nft\" or empty, not \"" + force + "\"");
    e.retryable = false;
    return e;
  }
  const Reader read = opts.read_command ? opts.read_command : Reader(default_read);

  Detection det;
  std::optional<HostState> st;  // read when needed: several commands
  auto host = [&]() -> const HostState& {
    if (!st) st = read_host(read, opts.native_nftables && force.empty(), det.warnings);
    return *st;
  };

  const std::string path =
      opts.run_dir.empty() ? std::string() : opts.run_dir + "/" + std::string(kBackendChoiceFile);
  auto boot_id = read_boot_id(opts.boot_id_path);
  if (!boot_id) {
    det.warnings.push_back("cannot read the boot ID (" + boot_id.error().describe() +
                           "): the backend is decided afresh at every start");
  }
  if (path.empty()) {
    det.warnings.push_back("no run dir: the backend choice is not persisted");
  }

  bool decided = false;
  if (force.empty() && boot_id && !path.empty()) {
    auto stored = load_choice(path);
    if (!stored) {
      det.warnings.push_back("ignoring the stored backend choice: " + stored.error().describe());
    } else if (*stored && (*stored)->boot_id == *boot_id &&
               fits((*stored)->kind, opts.native_nftables)) {
      const Stored& s = **stored;
      det.kind = s.kind;
      det.reason = "decided earlier this boot: " + s.reason;
      det.from_cache = true;
      decided = true;
      if (opts.native_nftables && s.kind != BackendKind::Nftables) {
        det.warnings.push_back("NATIVE_NFTABLES=true, but " + std::string(backend_name(s.kind)) +
                               " was chosen earlier this boot: staying on it until the node "
                               "reboots");
      }
    }
  }

  if (!decided) {
    AMBIENT_ASSIGN_OR_RETURN(Decision d, decide(opts, host(), det.warnings));
    det.kind = d.kind;
    det.reason = std::move(d.reason);
    if (boot_id && !path.empty()) {
      auto stored = store_choice(opts.run_dir, path, {*boot_id, det.kind, det.reason});
      if (!stored) {
        det.warnings.push_back("cannot persist the backend choice (" + stored.error().describe() +
                               "): a restart decides again");
      }
    }
  }

  det.host_report_deferred = det.from_cache && opts.defer_host_report;
  if (!det.host_report_deferred) add_leftovers(opts, host(), det);

  log::info("redirect backend: {} ({}){}", backend_name(det.kind), det.reason,
            det.from_cache ? " [reused]" : "");
  log_findings(det);
  return det;
}

Detection report_host_state(const DetectOptions& opts, BackendKind kind) {
  const Reader read = opts.read_command ? opts.read_command : Reader(default_read);
  Detection det;
  det.kind = kind;
  const bool native = opts.native_nftables && opts.force_iptables_binary.empty();
  add_leftovers(opts, read_host(read, native, det.warnings), det);
  log_findings(det);
  return det;
}

// ---------------------------------------------------------------------------
// P24: host nft userspace skew.

namespace {

// Every construct our in-pod (§8.2) and host (§7.3) nftables rules use, in
// the text form knftables/our generator writes (numeric priorities, the
// double spaces of rules 7 and 10, sets with comments, skuid, snat).
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
                                          first_line(err ? err : "no error text"));
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
    if (listing.find(name) == std::string_view::npos) missing.push_back(name);
  }
  const size_t want = count_of(kScratchRuleset, " counter ");
  const size_t have = count_of(listing, "counter packets");
  if (!missing.empty()) return "the listing lacks " + join(missing, ", ");
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
  const std::string cmd = join(argv, " ");
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
    return "`" + cmd + "` exited with " + std::to_string(r->exit_code) + ": " + first_line(r->err);
  }
  std::string problem = json ? check_json_listing(r->out) : check_text_listing(r->out);
  if (problem.empty() && !r->err.empty()) problem = "it printed " + first_line(r->err);
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
  if (!r) return std::move(r).error().with("nft compatibility check");
  if (!warning.empty()) log::warn("nft compatibility (P24): {}", warning);
  return warning;
}

}  // namespace ambient::redirect
