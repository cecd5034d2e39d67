#include "redirect/detect.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "lib/text.h"
#include "lib/unique_fd.h"
#include "log/log.h"
#include "process/process.h"

namespace ambient::redirect {

namespace {

using Reader = std::function<Result<std::string>(const std::vector<std::string>&)>;

BackendKind backend_kind(IptablesVariant variant) {
  return variant == IptablesVariant::Legacy ? BackendKind::IptablesLegacy
                                            : BackendKind::IptablesNft;
}

// The value of FORCE_IPTABLES_BINARY that picks the variant.
std::string_view force_value(IptablesVariant variant) {
  return variant == IptablesVariant::Legacy ? "legacy" : "nft";
}

// What one `*-save` dump tells us.
struct SaveDump {
  bool ran = false;
  std::string error;                   // why it did not run
  int rules = 0;                       // `-A` lines; declarations do not count
                                       // (docs/field-lessons.md#p18)
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

// What `<bin>-save --version` says the binaries are: nf_tables, else legacy.
Result<IptablesVariant> reported_variant(const Result<std::string>& version) {
  if (!version) return version.error();
  return version->find("nf_tables") != std::string::npos ? IptablesVariant::Nft
                                                         : IptablesVariant::Legacy;
}

// One iptables variant's binaries as the host shows them, v4 and v6.
struct VariantState {
  IptablesVariant variant = IptablesVariant::Nft;
  bool usable = false;
  std::string why_unusable;
  std::string version;  // "1.8.9", or "" when --version was rejected
  Result<IptablesVariant> reported = make_error(Errc::Internal, "not read");
  SaveDump v4, v6;
  std::string name() const { return std::string(variant_name(variant)); }
  int rules() const { return v4.rules + v6.rules; }
  bool has_istio() const { return !v4.istio_tables.empty() || !v6.istio_tables.empty(); }
};

VariantState read_variant(const Reader& read, IptablesVariant variant,
                          std::vector<std::string>& warnings) {
  VariantState v{.variant = variant};
  const bool want_nft = variant == IptablesVariant::Nft;
  const std::string save = iptables_binary(variant, IpFamily::V4, "-save");
  const std::string save6 = iptables_binary(variant, IpFamily::V6, "-save");

  auto version = read({save, "--version"});
  v.v4 = parse_save(read({save}));
  v.v6 = parse_save(read({save6}));
  v.reported = reported_variant(version);

  const bool is_nft = v.reported && *v.reported == IptablesVariant::Nft;
  if (version) {
    static const std::regex kVersion(R"(v([0-9]+(\.[0-9]+)+))");
    std::smatch m;
    if (std::regex_search(*version, m, kVersion)) v.version = m[1];
  }
  // A save binary that rejects --version is an old legacy one (upstream
  // takes it as legacy 0.0.0); nft variants always answer.
  if (!v.v4.ran) {
    v.why_unusable = v.v4.error;
  } else if (want_nft && !version) {
    v.why_unusable = save + " --version failed: " + version.error().describe();
  } else if (want_nft != is_nft) {
    v.why_unusable = save + " --version says \"" + text::first_line(*version) + "\", not " +
                     (want_nft ? "nf_tables" : "legacy");
  } else {
    v.usable = true;
  }
  if (v.usable && !v.v6.ran) {
    warnings.push_back(save6 + " did not run (" + v.v6.error + "); IPv6 state not read");
  }
  return v;
}

struct HostState {
  VariantState legacy, nft;
  bool nft_listed = false;
  std::vector<std::string> nft_tables;  // "inet istio-ambient-nat" (ours only)
  std::vector<std::string> probe_ipsets;
  const VariantState& of(IptablesVariant variant) const {
    return variant == IptablesVariant::Legacy ? legacy : nft;
  }
};

// Our nftables tables, as "<family> <name>".
void read_nft_tables(const Reader& read, HostState& st) {
  auto tables = read({"nft", "list", "tables"});
  if (!tables) {
    log::debug("redirect detect: nft list tables: {}", tables.error().describe());
    return;
  }
  st.nft_listed = true;
  std::istringstream in(*tables);
  std::string word, family, name;
  while (in >> word) {
    if (word != "table" || !(in >> family >> name)) continue;
    if (name.rfind("istio-ambient-", 0) == 0) st.nft_tables.push_back(family + " " + name);
  }
}

// `ipset list -n` only lists names (netlink IPSET_CMD_LIST); it creates
// nothing. An error means "proceed, warn" (docs/redirection.md#backend-choice).
void read_probe_ipsets(const Reader& read, HostState& st, std::vector<std::string>& warnings) {
  auto sets = read({"ipset", "list", "-n"});
  if (!sets) {
    warnings.push_back("cannot list ipsets (" + sets.error().describe() +
                       "); assuming no iptables probe sets");
    return;
  }
  std::istringstream in(*sets);
  std::string name;
  while (in >> name) {
    if (name == "istio-inpod-probes-v4" || name == "istio-inpod-probes-v6") {
      st.probe_ipsets.push_back(name);
    }
  }
}

HostState read_host(const Reader& read, bool want_ipsets, std::vector<std::string>& warnings) {
  HostState st;
  st.legacy = read_variant(read, IptablesVariant::Legacy, warnings);
  st.nft = read_variant(read, IptablesVariant::Nft, warnings);
  read_nft_tables(read, st);
  if (want_ipsets) read_probe_ipsets(read, st, warnings);
  return st;
}

std::vector<std::string> istio_chain_findings(const VariantState& v) {
  std::vector<std::string> out;
  auto one = [&](IpFamily ip, const SaveDump& d) {
    if (d.istio_tables.empty()) return;
    out.push_back(iptables_binary(v.variant, ip, "") + ": ISTIO_* chains in " +
                  text::join({d.istio_tables.begin(), d.istio_tables.end()}, ", "));
  };
  one(IpFamily::V4, v.v4);
  one(IpFamily::V6, v.v6);
  return out;
}

std::string variant_text(const VariantState& v) {
  return v.name() + (v.version.empty() ? "" : " v" + v.version);
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
                                                     " rules (" + variant_text(st.legacy) + ")"};
  }
  if (st.nft.usable) {
    return Decision{BackendKind::IptablesNft,
                    "no rules in iptables-legacy; " + variant_text(st.nft) + " is usable"};
  }
  if (st.legacy.usable) {
    return Decision{BackendKind::IptablesLegacy, "iptables-nft is not usable (" +
                                                     st.nft.why_unusable + "); using " +
                                                     variant_text(st.legacy)};
  }
  Error e = make_error(Errc::Unavailable,
                       "no usable iptables: iptables-legacy: " + st.legacy.why_unusable +
                           "; iptables-nft: " + st.nft.why_unusable);
  e.retryable = false;
  return e;
}

// FORCE_IPTABLES_BINARY: that variant, whatever the host shows.
Decision choose_forced(const DetectOptions& opts, const HostState& st,
                       std::vector<std::string>& warnings) {
  const IptablesVariant variant = *opts.force_iptables;
  const std::string setting = "FORCE_IPTABLES_BINARY=" + std::string(force_value(variant));
  const VariantState& v = st.of(variant);
  if (!v.usable) {
    warnings.push_back(setting + " but " + v.name() + " does not look usable: " + v.why_unusable);
  }
  return Decision{backend_kind(variant), setting};
}

// NATIVE_NFTABLES: nftables, unless iptables artifacts exist
// (docs/field-lessons.md#p22).
Result<Decision> choose_native(const HostState& st, std::vector<std::string>& warnings) {
  std::vector<std::string> artifacts = istio_chain_findings(st.legacy);
  for (auto& s : istio_chain_findings(st.nft)) artifacts.push_back(std::move(s));
  for (const auto& s : st.probe_ipsets) artifacts.push_back("ipset " + s);
  if (artifacts.empty()) {
    return Decision{BackendKind::Nftables, "NATIVE_NFTABLES=true and no iptables artifacts"};
  }
  // Stay with the variant that holds our chains; with chains in both or only
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
    return std::move(d).error().context("NATIVE_NFTABLES=true but iptables artifacts exist (" +
                                        text::join(artifacts, "; ") + ")");
  }
  d->reason = "NATIVE_NFTABLES=true but iptables artifacts exist (" + text::join(artifacts, "; ") +
              "): staying on " + std::string(backend_name(d->kind)) + " until the node reboots";
  warnings.push_back(d->reason + "; reboot the node to complete the migration to nftables");
  return d;
}

Result<Decision> decide(const DetectOptions& opts, const HostState& st,
                        std::vector<std::string>& warnings) {
  // Upstream's precedence: NATIVE_NFTABLES first, then FORCE_IPTABLES_BINARY.
  if (opts.native_nftables) {
    if (opts.force_iptables) {
      warnings.push_back("FORCE_IPTABLES_BINARY=" + std::string(force_value(*opts.force_iptables)) +
                         " is ignored: NATIVE_NFTABLES=true wins, as upstream");
    }
    return choose_native(st, warnings);
  }
  if (opts.force_iptables) return choose_forced(opts, st, warnings);
  return choose_iptables(st, warnings);
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
  // The in-pod mechanism; unset in a file of an agent that knew no eBPF.
  std::optional<bool> ebpf;
  std::string ebpf_reason;
};

constexpr std::string_view kInpodEbpf = "ebpf";
constexpr std::string_view kInpodNetfilter = "netfilter";

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
  if (!kind) return std::move(kind).error().context(path);
  Stored s{str("boot_id"), *kind, str("reason"), std::nullopt, str("inpod_reason")};
  if (doc.contains("inpod")) {
    const std::string inpod = str("inpod");
    if (inpod != kInpodEbpf && inpod != kInpodNetfilter) {
      return make_error(Errc::InvalidArgument,
                        path + ": unknown in-pod mechanism \"" + inpod + "\"");
    }
    s.ebpf = inpod == kInpodEbpf;
  }
  return std::optional<Stored>(std::move(s));
}

// Temp file in the same directory, fsync, rename: a reader sees the old or
// the new decision, never half of one.
Result<> store_choice(const std::string& dir, const std::string& path, const Stored& s) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error(Errc::Internal, "create " + dir + ": " + ec.message());
  nlohmann::json doc = {
      {"boot_id", s.boot_id}, {"backend", std::string(backend_name(s.kind))}, {"reason", s.reason}};
  if (s.ebpf) {
    doc["inpod"] = std::string(*s.ebpf ? kInpodEbpf : kInpodNetfilter);
    doc["inpod_reason"] = s.ebpf_reason;
  }
  const std::string text = doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    // Never through something planted at the temp name (a symlink would
    // have us write where it points): it goes, and the file is made anew.
    ::unlink(tmp.c_str());
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
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
// reboot (docs/redirection.md#backend-choice). Without it, only an iptables
// choice does.
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

std::optional<IptablesVariant> iptables_variant(BackendKind kind) {
  switch (kind) {
    case BackendKind::IptablesLegacy:
      return IptablesVariant::Legacy;
    case BackendKind::IptablesNft:
      return IptablesVariant::Nft;
    case BackendKind::Nftables:
      break;
  }
  return std::nullopt;
}

namespace {

// Where this boot's choice is kept: usable only with both a run dir and a
// boot ID.
struct ChoiceFile {
  std::string dir;
  std::string path;  // "" without a run dir
  std::optional<std::string> boot_id;
  bool usable() const { return boot_id && !path.empty(); }
};

ChoiceFile choice_file(const DetectOptions& opts, std::vector<std::string>& warnings) {
  ChoiceFile f{.dir = opts.run_dir};
  if (!opts.run_dir.empty()) f.path = opts.run_dir + "/" + std::string(kBackendChoiceFile);
  auto boot_id = read_boot_id(opts.boot_id_path);
  if (boot_id) {
    f.boot_id = std::move(*boot_id);
  } else {
    warnings.push_back("cannot read the boot ID (" + boot_id.error().describe() +
                       "): the backend is decided afresh at every start");
  }
  if (f.path.empty()) warnings.emplace_back("no run dir: the backend choice is not persisted");
  return f;
}

// This boot's stored choice, if there is one and it can be read.
std::optional<Stored> stored_this_boot(const ChoiceFile& file, Detection& det) {
  if (!file.usable()) return std::nullopt;
  auto stored = load_choice(file.path);
  if (!stored) {
    det.warnings.push_back("ignoring the stored backend choice: " + stored.error().describe());
    return std::nullopt;
  }
  if (!*stored || (*stored)->boot_id != *file.boot_id) return std::nullopt;
  return std::move(**stored);
}

// Takes over the netfilter backend chosen earlier this boot if it fits the
// request (sets det.from_cache).
void reuse_stored(const DetectOptions& opts, const Stored& s, Detection& det) {
  if (!fits(s.kind, opts.native_nftables)) return;
  det.kind = s.kind;
  det.reason = "decided earlier this boot: " + s.reason;
  det.from_cache = true;
  if (opts.native_nftables && s.kind != BackendKind::Nftables) {
    det.warnings.push_back("NATIVE_NFTABLES=true, but " + std::string(backend_name(s.kind)) +
                           " was chosen earlier this boot: staying on it until the node "
                           "reboots");
  }
}

std::string_view ebpf_request_text(EbpfRequest r) {
  switch (r) {
    case EbpfRequest::On:
      return "true";
    case EbpfRequest::Off:
      return "false";
    case EbpfRequest::Auto:
      break;
  }
  return "auto";
}

// How the in-pod mechanism was chosen: whether now (so it must be stored),
// and the reason to store, without "earlier this boot" prefixes.
struct InpodChoice {
  bool decided_now = false;
  std::string stored_reason;
};

// The in-pod mechanism (see detect_backend).
Result<InpodChoice> choose_inpod(const DetectOptions& opts, const std::optional<Stored>& earlier,
                                 Detection& det) {
  auto gate = [&]() -> EbpfGateAnswer {
    return opts.ebpf_gate ? opts.ebpf_gate() : EbpfGateAnswer{false, "no feature gate to run"};
  };
  const std::string request =
      "AMBIENT_EBPF_REDIRECTION=" + std::string(ebpf_request_text(opts.ebpf));
  if (earlier && earlier->ebpf.value_or(false)) {
    const EbpfGateAnswer g = gate();
    if (!g.usable) {
      return make_error(Errc::Unavailable,
                        "pods of this boot are redirected with eBPF, which cannot be loaded now (" +
                            g.reason + "); fix that, or reboot the node to choose again");
    }
    det.ebpf = true;
    det.ebpf_reason = "chosen earlier this boot: " + earlier->ebpf_reason;
    if (opts.ebpf == EbpfRequest::Off) {
      det.warnings.push_back(request +
                             ", but pods of this boot are redirected with eBPF: staying on it "
                             "until the node reboots");
    }
    return InpodChoice{false, earlier->ebpf_reason};
  }
  if (earlier) {
    det.ebpf_reason = earlier->ebpf ? "chosen earlier this boot: " + earlier->ebpf_reason
                                    : "pods of this boot have netfilter rules (an agent that "
                                      "knew no eBPF chose)";
    if (opts.ebpf != EbpfRequest::Off) {
      det.warnings.push_back(request +
                             ", but pods of this boot have netfilter rules: staying on them "
                             "until the node reboots");
    }
    if (!earlier->ebpf) return InpodChoice{true, "an agent that knew no eBPF chose"};
    return InpodChoice{false, earlier->ebpf_reason};
  }
  if (opts.ebpf == EbpfRequest::Off) {
    det.ebpf_reason = request;
    return InpodChoice{true, det.ebpf_reason};
  }
  const EbpfGateAnswer g = gate();
  det.ebpf = g.usable;
  det.ebpf_reason = g.usable ? g.reason : "the eBPF feature gate failed: " + g.reason;
  if (!g.usable && opts.ebpf == EbpfRequest::On) {
    det.warnings.push_back(request + ", but " + det.ebpf_reason +
                           ": pods get the netfilter backend's rules");
  }
  return InpodChoice{true, det.ebpf_reason};
}

void store(const ChoiceFile& file, const InpodChoice& inpod, Detection& det) {
  if (!file.usable()) return;
  auto stored = store_choice(file.dir, file.path,
                             {*file.boot_id, det.kind, det.reason, det.ebpf, inpod.stored_reason});
  if (!stored) {
    det.warnings.push_back("cannot persist the backend choice (" + stored.error().describe() +
                           "): a restart decides again");
  }
}

// `<bin>-save --version` of one variant, for a choice whose host state was
// not read.
Result<IptablesVariant> probe_variant(const Reader& read, IptablesVariant variant) {
  return reported_variant(read({iptables_binary(variant, IpFamily::V4, "-save"), "--version"}));
}

// The state of the backends not chosen, from what read_host saw.
void add_leftovers(const DetectOptions& opts, const HostState& st, Detection& det) {
  det.leftovers = leftovers(st, det.kind);
  if (opts.native_nftables && !st.nft_listed) {
    det.warnings.emplace_back(
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
  const Reader read = opts.read_command ? opts.read_command : Reader(default_read);
  Detection det;
  std::optional<HostState> st;  // read when needed: several commands
  auto host = [&]() -> const HostState& {
    if (!st) st = read_host(read, opts.native_nftables, det.warnings);
    return *st;
  };

  const ChoiceFile file = choice_file(opts, det.warnings);
  const std::optional<Stored> earlier = stored_this_boot(file, det);
  // A forced variant is decided afresh (and overwrites the stored choice).
  const bool forced = opts.force_iptables && !opts.native_nftables;
  if (!forced && earlier) reuse_stored(opts, *earlier, det);
  AMBIENT_ASSIGN_OR_RETURN(const InpodChoice inpod, choose_inpod(opts, earlier, det));
  if (!det.from_cache) {
    AMBIENT_ASSIGN_OR_RETURN(Decision d, decide(opts, host(), det.warnings));
    det.kind = d.kind;
    det.reason = std::move(d.reason);
  }
  if (!det.from_cache || inpod.decided_now) store(file, inpod, det);

  det.host_report_deferred = det.from_cache && opts.defer_host_report;
  if (!det.host_report_deferred) add_leftovers(opts, host(), det);
  if (auto variant = iptables_variant(det.kind)) {
    det.iptables_probe = st ? st->of(*variant).reported : probe_variant(read, *variant);
  }

  log::info("redirect backend: {} ({}){}; in pods: {} ({})", backend_name(det.kind), det.reason,
            det.from_cache ? " [reused]" : "", det.ebpf ? "eBPF" : "netfilter rules",
            det.ebpf_reason);
  log_findings(det);
  return det;
}

Detection report_host_state(const DetectOptions& opts, BackendKind kind) {
  const Reader read = opts.read_command ? opts.read_command : Reader(default_read);
  Detection det;
  det.kind = kind;
  const bool native = opts.native_nftables;
  add_leftovers(opts, read_host(read, native, det.warnings), det);
  log_findings(det);
  return det;
}

}  // namespace ambient::redirect
