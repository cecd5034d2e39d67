#include "redirect/iptables/host.h"

#include <libipset/ipset.h>

#include <cstdarg>
#include <cstdio>
#include <sstream>

#include "log/log.h"
#include "process/process.h"

namespace ambient::redirect {

namespace {

// ---- libipset ----
//
// libipset keeps process-global state: the registered set types (loaded
// once, with a per-type "kernel checked" flag) and a cache of set name ->
// type/family that CREATE fills and ADD/DEL/TEST consult before asking the
// kernel. None of it is locked, so every libipset call in the process goes
// through this mutex. The cache is keyed by name only, not by netns; that is
// harmless here because each of our set names always has one type and
// family. Each command gets a fresh `struct ipset` (and so a fresh netlink
// socket, opened in the calling thread's netns) so no option such as
// -exist carries over from one command to the next.
std::mutex g_ipset_mu;

struct IpsetIo {
  std::string out;
  std::string err;
};

std::string vformat(const char* fmt, va_list ap) {
  va_list copy;
  va_copy(copy, ap);
  int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n <= 0) return {};
  std::string s(static_cast<size_t>(n) + 1, '\0');
  std::vsnprintf(s.data(), s.size(), fmt, ap);
  s.resize(static_cast<size_t>(n));
  return s;
}

void append_line(std::string& to, std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (text.empty()) return;
  if (!to.empty()) to += "; ";
  to += text;
}

// The library's defaults print to stderr and exit(); ours only collect.
int on_ipset_error(struct ipset* /*ipset*/, void* p, int status, const char* msg, ...)
    __attribute__((format(printf, 4, 5)));
int on_ipset_error(struct ipset* /*ipset*/, void* p, int status, const char* msg, ...) {
  if (status == 0 || msg == nullptr) return 0;
  va_list ap;
  va_start(ap, msg);
  append_line(static_cast<IpsetIo*>(p)->err, vformat(msg, ap));
  va_end(ap);
  return -1;
}

int on_ipset_standard_error(struct ipset* ipset, void* p) {
  struct ipset_session* session = ::ipset_session(ipset);
  const char* msg = ipset_session_report_msg(session);
  if (msg != nullptr && *msg != '\0') {
    if (ipset_session_report_type(session) == IPSET_ERROR) {
      append_line(static_cast<IpsetIo*>(p)->err, msg);
    } else {
      log::debug("ipset: {}", msg);
    }
  }
  ipset_session_report_reset(session);
  return -1;
}

int on_ipset_output(struct ipset_session* /*session*/, void* p, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
int on_ipset_output(struct ipset_session* /*session*/, void* p, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  static_cast<IpsetIo*>(p)->out += vformat(fmt, ap);
  va_end(ap);
  return 0;
}

struct IpsetDeleter {
  void operator()(struct ipset* h) const { ipset_fini(h); }
};

// Runs one ipset command, given as the ipset CLI's arguments (no quoting:
// each argument is passed as is), and returns what it printed.
Result<std::string> ipset_run(std::vector<std::string> args) {
  std::string cmdline = "ipset";
  for (const auto& a : args) cmdline += " " + a;
  std::lock_guard lock(g_ipset_mu);
  static bool types_loaded = false;
  if (!types_loaded) {
    ipset_load_types();
    types_loaded = true;
  }
  std::unique_ptr<struct ipset, IpsetDeleter> handle(ipset_init());
  if (!handle) return make_error(Errc::Internal, cmdline + ": ipset_init failed");
  IpsetIo io;
  ipset_custom_printf(handle.get(), on_ipset_error, on_ipset_standard_error, on_ipset_output, &io);
  std::string arg0 = "ipset";
  std::vector<char*> argv = {arg0.data()};
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int rc = ipset_parse_argv(handle.get(), static_cast<int>(argv.size() - 1), argv.data());
  if (rc < 0 || !io.err.empty()) {
    return make_error(Errc::Internal,
                      cmdline + ": " + (io.err.empty() ? std::string("failed") : io.err));
  }
  return io.out;
}

// The kernel's ENOENT for a set name, as libipset words it.
bool is_missing_set(const Error& e) {
  return e.message.find("does not exist") != std::string::npos;
}

std::string set_name(IpFamily ip) { return std::string(probe_set_name(ip)); }

// Entries from `ipset save <set>`: `add <set> <ip> comment "<uid>"`.
Result<std::vector<ProbeSetEntry>> parse_save(const std::string& out) {
  std::vector<ProbeSetEntry> entries;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string verb, set, ip;
    words >> verb >> set >> ip;
    if (verb != "add") continue;
    auto addr = IpAddress::parse(ip);
    if (!addr) return std::move(addr).error().context("parse ipset entry \"" + line + "\"");
    ProbeSetEntry e{.ip = *addr};
    auto c = line.find(" comment \"");
    if (c != std::string::npos) {
      auto start = c + 10;
      auto end = line.find('"', start);
      e.uid = line.substr(start, end == std::string::npos ? std::string::npos : end - start);
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

// Entries of one set; an absent set has none.
Result<std::vector<ProbeSetEntry>> list_set(IpFamily ip) {
  auto out = ipset_run({"save", set_name(ip)});
  if (!out) {
    if (is_missing_set(out.error())) return std::vector<ProbeSetEntry>{};
    return std::move(out).error();
  }
  return parse_save(*out);
}

Result<> create_set(IpFamily ip) {
  auto r = ipset_run({"create", set_name(ip), "hash:ip", "family",
                      ip == IpFamily::V6 ? "inet6" : "inet", "comment", "-exist"});
  if (!r) return std::move(r).error();
  return {};
}

// ---- iptables ----

bool jumps_to_host_chain(const std::string& line) {
  const std::string needle = " -j " + std::string(kHostChain);
  auto p = line.find(needle);
  if (p == std::string::npos) return false;
  auto end = p + needle.size();
  return end == line.size() || line[end] == ' ';
}

// Restore lines that take our state out of the nat table as `save` shows
// it: every jump to ISTIO_POSTRT (however many copies there are), then the
// chain itself. Empty when nothing of ours is there.
std::vector<std::string> host_removal_lines(const std::string& save) {
  const std::string chain(kHostChain);
  std::vector<std::string> lines;
  bool in_nat = false, have_chain = false;
  std::istringstream in(save);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind('*', 0) == 0) in_nat = line == "*nat";
    if (!in_nat) continue;
    if (line.rfind(":" + chain + " ", 0) == 0) have_chain = true;
    if (line.rfind("-A ", 0) == 0 && line.rfind("-A " + chain + " ", 0) != 0 &&
        jumps_to_host_chain(line)) {
      lines.push_back("-D" + line.substr(2));
    }
  }
  if (have_chain) {
    lines.push_back("-F " + chain);
    lines.push_back("-X " + chain);
  }
  return lines;
}

}  // namespace

IptablesHostRedirect::IptablesHostRedirect(IptablesOptions opts) : opts_(opts) {}

std::string IptablesHostRedirect::bin(IpFamily ip, std::string_view tool) const {
  return iptables_binary(opts_.variant, ip, tool);
}

Result<std::string> IptablesHostRedirect::save_nat(IpFamily ip) const {
  auto r = run_checked({.argv = {bin(ip, "-save"), "-t", "nat"}, .sandbox = opts_.sandbox});
  if (!r) return std::move(r).error();
  return r->out;
}

Result<> IptablesHostRedirect::restore(IpFamily ip, const std::string& text) const {
  std::vector<std::string> argv = {bin(ip, "-restore"), "--noflush", "-v"};
  if (legacy()) argv.emplace_back("--wait=30");
  auto r = run_checked({.argv = argv, .stdin_data = text, .sandbox = opts_.sandbox});
  if (!r) return std::move(r).error();
  return {};
}

Result<> IptablesHostRedirect::remove_rules_of(IpFamily ip) const {
  AMBIENT_ASSIGN_OR_RETURN(std::string state, save_nat(ip));
  auto lines = host_removal_lines(state);
  if (lines.empty()) return {};
  std::string text = "*nat\n";
  for (const auto& l : lines) text += l + "\n";
  return restore(ip, text + "COMMIT\n");
}

Result<> IptablesHostRedirect::install_rules(const HostProbeConfig& cfg) {
  const std::string name(this->name());
  // `-m set` needs the sets to exist when the rule goes in.
  AMBIENT_RETURN_IF_ERROR(ensure_sets(cfg.ipv6).context("install " + name + " host rules"));
  for (IpFamily ip : kIpFamilies) {
    if (ip == IpFamily::V6 && !cfg.ipv6) {
      // IPv6 off now but maybe not before: take old v6 rules out. ip6tables
      // may be unusable on an IPv4-only node, so this is best effort.
      auto r = remove_rules_of(IpFamily::V6);
      if (!r) log::debug("host rules: ipv6 cleanup skipped: {}", r.error().describe());
      continue;
    }
    // Removal and creation in one restore transaction: whatever was there
    // (one copy, duplicates or nothing) is replaced atomically, and probes
    // are never briefly un-SNATed.
    AMBIENT_ASSIGN_OR_RETURN(std::string state, save_nat(ip));
    std::string create = host_iptables_restore_text(cfg, ip);  // "* nat\n-N ...COMMIT\n"
    std::string text = "* nat\n";
    for (const auto& l : host_removal_lines(state)) text += l + "\n";
    text += create.substr(create.find('\n') + 1);
    // A v6 failure leaves the v4 rules in place: they are complete on their
    // own, and the caller retries the whole install.
    AMBIENT_RETURN_IF_ERROR(restore(ip, text).context(
        "install " + name + " " + std::string(ip_family_name(ip)) + " host rules"));
  }
  return {};
}

Result<> IptablesHostRedirect::remove_rules() {
  const std::string name(this->name());
  AMBIENT_RETURN_IF_ERROR(remove_rules_of(IpFamily::V4).context("remove " + name + " host rules"));
  // An IPv4-only node may have no usable ip6tables: a failing save means
  // there is nothing to remove; a failing restore is a real error.
  auto state = save_nat(IpFamily::V6);
  if (!state) {
    log::debug("host rules: ip6tables-save failed, no ipv6 rules to remove: {}",
               state.error().describe());
    return {};
  }
  auto lines = host_removal_lines(*state);
  if (lines.empty()) return {};
  std::string text = "*nat\n";
  for (const auto& l : lines) text += l + "\n";
  return restore(IpFamily::V6, text + "COMMIT\n").context("remove " + name + " ipv6 host rules");
}

Result<> IptablesHostRedirect::ensure_sets(bool ipv6) {
  ipv6_ = ipv6;
  AMBIENT_RETURN_IF_ERROR(create_set(IpFamily::V4).context("create ipset"));
  if (ipv6) AMBIENT_RETURN_IF_ERROR(create_set(IpFamily::V6).context("create ipset"));
  return {};
}

Result<> IptablesHostRedirect::flush_sets() {
  for (IpFamily ip : kIpFamilies) {
    auto r = ipset_run({"flush", set_name(ip)});
    if (!r && !is_missing_set(r.error())) return std::move(r).error().context("flush ipset");
  }
  return {};
}

Result<> IptablesHostRedirect::destroy_sets() {
  for (IpFamily ip : kIpFamilies) {
    auto r = ipset_run({"destroy", set_name(ip)});
    if (!r && !is_missing_set(r.error())) return std::move(r).error().context("destroy ipset");
  }
  return {};
}

Result<> IptablesHostRedirect::add_pod_ip(const IpAddress& pod_ip, const std::string& pod_uid) {
  AMBIENT_ASSIGN_OR_RETURN(auto wanted, probe_set_address(pod_ip, pod_uid, ipv6_));
  if (!wanted) return {};
  const IpAddress addr = *wanted;
  const IpFamily ip = ip_family_of(addr);
  std::lock_guard lock(entries_mu_);
  AMBIENT_RETURN_IF_ERROR(create_set(ip).context("add " + addr.to_string() + " to probe set"));
  // -exist: an existing entry takes the new comment (the IP was reused).
  auto r = ipset_run({"add", set_name(ip), addr.to_string(), "comment", pod_uid, "-exist"});
  if (!r) return std::move(r).error().context("add " + addr.to_string() + " to probe set");
  return {};
}

Result<> IptablesHostRedirect::remove_pod_ip(const IpAddress& pod_ip, const std::string& pod_uid) {
  const IpAddress addr = pod_ip.unmapped();
  const IpFamily ip = ip_family_of(addr);
  const std::string what = "remove " + addr.to_string() + " from probe set";
  std::lock_guard lock(entries_mu_);
  AMBIENT_ASSIGN_OR_RETURN(auto entries, list_set(ip).context(what));
  for (const auto& e : entries) {
    if (e.ip != addr) continue;
    if (e.uid != pod_uid) {
      log::warn("probe set: {} belongs to pod {}, not {}: kept", addr.to_string(), e.uid, pod_uid);
      return {};
    }
    auto r = ipset_run({"del", set_name(ip), addr.to_string(), "-exist"});
    if (!r) return std::move(r).error().context(what);
    return {};
  }
  return {};
}

Result<std::vector<ProbeSetEntry>> IptablesHostRedirect::list_sets() {
  AMBIENT_ASSIGN_OR_RETURN(auto all, list_set(IpFamily::V4).context("list probe sets"));
  AMBIENT_ASSIGN_OR_RETURN(auto v6, list_set(IpFamily::V6).context("list probe sets"));
  all.insert(all.end(), v6.begin(), v6.end());
  return all;
}

}  // namespace ambient::redirect
