#include "netns/proc_scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <locale>
#include <memory>
#include <regex>
#include <set>

#include "lib/file.h"
#include "lib/unique_fd.h"
#include "log/log.h"

namespace ambient::netns {
namespace {

// Upstream's two cgroup-path regexes (istio cni/pkg/nodeagent, from SPIRE),
// translated from RE2 to std::regex ECMAScript:
// - named groups become numbered ones (ECMAScript has no (?P<name>...));
// - [[:^punct:]] becomes [^[:punct:]];
// - [[:punct:]] is kept: under the classic locale (imbued below, so a global
//   locale change cannot alter it) it is the same 32 ASCII characters as RE2's.
//
// 1: "pod"-prefixed UID with optional punctuation between its groups, then
//    punctuation-separated segments, then the container ID at the end.
//    Groups: 1 = pod UID, 2 = container ID.
constexpr const char* kPodPathRe =
    R"re([[:punct:]]pod([[:xdigit:]]{8}[[:punct:]]?[[:xdigit:]]{4}[[:punct:]]?)re"
    R"re([[:xdigit:]]{4}[[:punct:]]?[[:xdigit:]]{4}[[:punct:]]?[[:xdigit:]]{12})[[:punct:]])re"
    R"re((?:[^[:punct:]]+[[:punct:]])*)re"
    R"re(([^[:punct:]]+)$)re";
// 2: cri-o paths that carry only the container ("/../crio-<id>"); a path that
//    also names a pod must not match (group 2 non-empty invalidates it).
//    Groups: 1 = pod UID (always empty), 2 = mustnotmatch, 3 = container ID.
//    RE2's `(?:[[:^punct:]]*/*)*` is written `(?:[^[:punct:]]|/)*`: the same
//    language (non-punctuation and '/'), and nothing inside the group is
//    captured, so matches and groups are unchanged. The literal form splits
//    a run of n letters 2^n ways, and libstdc++'s backtracking tries them all
//    when "crio" is absent (measured: 10 s at n = 14; a container ID has 64),
//    where RE2 runs in linear time.
constexpr const char* kCrioPathRe =
    R"re(()(pod[[:xdigit:]]{8}[[:punct:]]?[[:xdigit:]]{4}[[:punct:]]?)re"
    R"re([[:xdigit:]]{4}[[:punct:]]?[[:xdigit:]]{4}[[:punct:]]?[[:xdigit:]]{12}[[:punct:]])?)re"
    R"re((?:[^[:punct:]]|/)*crio[[:punct:]])re"
    R"re(([^[:punct:]]+)$)re";

std::regex make_regex(const char* pattern) {
  std::regex re;
  re.imbue(std::locale::classic());
  re.assign(pattern, std::regex::ECMAScript);
  return re;
}

struct PathMatch {
  std::string pod_uid;  // canonical; empty for cri-o container-only paths
  std::string container_id;
};

// Go's unicode.IsPunct restricted to ASCII (the UID group holds only hex
// digits and ASCII punctuation). Narrower than [[:punct:]]: $ + < = > ^ ` | ~
// are symbols, not punctuation, and upstream leaves them in place.
bool is_unicode_punct(char c) {
  return c != '\0' && std::strchr("!\"#%&'()*,-./:;?@[\\]_{}", c) != nullptr;
}

std::string canonical_pod_uid(std::string_view uid) {
  std::string out(uid);
  for (char& c : out) {
    if (is_unicode_punct(c)) c = '-';
  }
  return out;
}

// Both regexes are tried; exactly one valid match identifies the path (two
// would be ambiguous and count as none, as upstream).
Result<std::optional<PathMatch>> match_cgroup_path(std::string_view path) {
  static const std::regex pod_re = make_regex(kPodPathRe);
  static const std::regex crio_re = make_regex(kCrioPathRe);
  // Trimming ".scope" first keeps the regexes free of greediness tricks.
  if (path.ends_with(".scope")) path.remove_suffix(6);

  std::optional<PathMatch> found;
  int valid = 0;
  std::cmatch m;
  // Each pattern needs its literal ("pod", "crio"): checking for it first
  // skips the regex for most host processes without changing any result.
  const bool maybe_pod = path.find("pod") != std::string_view::npos;
  const bool maybe_crio = path.find("crio") != std::string_view::npos;
  // std::regex may throw for input that exhausts its resources; that is an
  // unparseable entry, not a reason to stop the scan.
  try {
    if (maybe_pod && std::regex_search(path.data(), path.data() + path.size(), m, pod_re)) {
      ++valid;
      found = PathMatch{.pod_uid = canonical_pod_uid(m.str(1)), .container_id = m.str(2)};
    }
    if (maybe_crio && std::regex_search(path.data(), path.data() + path.size(), m, crio_re) &&
        m.length(2) == 0) {
      ++valid;
      found = PathMatch{.pod_uid = m.str(1), .container_id = m.str(3)};
    }
  } catch (const std::regex_error& e) {
    return make_error(Errc::Internal, std::string("matching cgroup path: ") + e.what());
  }
  if (valid != 1) return std::optional<PathMatch>();
  return found;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Numeric-named directories of proc_root, in numeric order so the scan (and
// the tie-break between equally old candidates) is deterministic.
Result<std::vector<std::string>> list_pids(const std::string& proc_root) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(proc_root.c_str()), &::closedir);
  if (!dir) return sys_error("opendir " + proc_root);
  std::vector<std::string> pids;
  for (;;) {
    errno = 0;
    const dirent* e = ::readdir(dir.get());
    if (e == nullptr) {
      if (errno != 0) return sys_error("readdir " + proc_root);
      break;
    }
    if (!all_digits(e->d_name)) continue;
    bool is_dir = e->d_type == DT_DIR;
    if (e->d_type == DT_UNKNOWN) {
      struct stat st {};
      is_dir = ::fstatat(::dirfd(dir.get()), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
               S_ISDIR(st.st_mode);
    }
    if (is_dir) pids.emplace_back(e->d_name);
  }
  std::sort(pids.begin(), pids.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  });
  return pids;
}

using NetnsKey = std::pair<dev_t, ino_t>;

// One process of some pod, as far as the scan needs it.
struct PodProcess {
  std::string pid;
  size_t order = 0;  // position in the (numeric) pid order: the tie-break after age
  NetnsKey key;
  uint64_t start_time = 0;
  std::string uid, container_id;
};

// docs/node-agent.md#proc-scan, steps 1-3, for one process. nullopt: not a pod's process, or in
// the host netns. An error: the entry could not be read or parsed; the caller skips it either
// way.
Result<std::optional<PodProcess>> read_process(const ProcScanDeps& deps, const std::string& pid,
                                               size_t order) {
  const std::string dir = deps.proc_root + "/" + pid;
  const std::string ns_path = dir + "/ns/net";
  struct stat st {};
  if (::stat(ns_path.c_str(), &st) != 0) return sys_error("stat " + ns_path);
  AMBIENT_ASSIGN_OR_RETURN(std::string stat_text, read_whole_file(dir + "/stat"));
  AMBIENT_ASSIGN_OR_RETURN(uint64_t start_time, start_time_from_stat(stat_text));

  const NetnsKey key{st.st_dev, st.st_ino};
  // A pod netns equal to the host's would mean redirecting the whole node
  // (istio/istio#55139): never hand it out.
  if (key == deps.host_netns) return std::optional<PodProcess>();

  AMBIENT_ASSIGN_OR_RETURN(std::string cgroup, read_whole_file(dir + "/cgroup"));
  AMBIENT_ASSIGN_OR_RETURN(auto pod, pod_from_cgroup(cgroup));
  if (!pod || pod->first.empty()) return std::optional<PodProcess>();
  return std::optional<PodProcess>(PodProcess{.pid = pid,
                                              .order = order,
                                              .key = key,
                                              .start_time = start_time,
                                              .uid = std::move(pod->first),
                                              .container_id = std::move(pod->second)});
}

bool older(const PodProcess& a, const PodProcess& b) {
  return a.start_time != b.start_time ? a.start_time < b.start_time : a.order < b.order;
}

// The scan's second half: which pod each netns belongs to, and which netns
// each wanted pod gets. Netns are opened, and IPs checked, only where needed.
class Pairing {
 public:
  Pairing(const ProcScanDeps& deps, std::map<NetnsKey, std::vector<PodProcess>> by_netns)
      : deps_(deps), by_netns_(std::move(by_netns)) {
    for (auto& [key, procs] : by_netns_) std::sort(procs.begin(), procs.end(), older);
  }

  // The pod a netns belongs to. Usually only one pod's processes are in it;
  // when several are (a process may be visiting another pod's netns), the
  // pod whose IPs it holds wins, else the pod of its oldest process (the
  // netns existed before anyone could enter it).
  std::string owner(const NetnsKey& key, const std::map<std::string, const WantedPod*>& wanted) {
    const auto& procs = by_netns_.at(key);
    const std::string& oldest = procs.front().uid;
    if (std::all_of(procs.begin(), procs.end(),
                    [&](const PodProcess& p) { return p.uid == oldest; })) {
      return oldest;
    }
    std::set<std::string> tried;
    for (const PodProcess& p : procs) {
      auto w = wanted.find(p.uid);
      if (w == wanted.end() || !tried.insert(p.uid).second) continue;
      if (holds_ips(key, *w->second)) return p.uid;
    }
    log::warn(
        "proc scan: netns {} holds processes of several pods; giving it to pod {}, whose process "
        "is the oldest",
        deps_.proc_root + "/" + procs.front().pid + "/ns/net", oldest);
    return oldest;
  }

  // Of the netns a pod owns, the one holding its IPs, else (or among
  // several holding them) the one where its oldest process runs: the
  // sandbox's. Empty when none can be opened.
  std::optional<FoundNetns> choose(const WantedPod& pod, std::vector<NetnsKey> keys) {
    if (keys.size() > 1) {
      log::warn("proc scan: found more than one netns for pod {}, preferring the one with its IPs",
                pod.uid);
      std::vector<NetnsKey> holding;
      for (const auto& k : keys) {
        if (holds_ips(k, pod)) holding.push_back(k);
      }
      if (!holding.empty()) keys = std::move(holding);
    }
    std::vector<const PodProcess*> firsts;  // the pod's oldest process in each netns
    for (const auto& k : keys) {
      for (const PodProcess& p : by_netns_.at(k)) {
        if (p.uid == pod.uid) {
          firsts.push_back(&p);
          break;
        }
      }
    }
    std::sort(firsts.begin(), firsts.end(),
              [](const PodProcess* a, const PodProcess* b) { return older(*a, *b); });
    for (const PodProcess* p : firsts) {
      if (NetnsRef ns = open(p->key)) {
        return FoundNetns{
            .netns = ns, .start_time = p->start_time, .container_id = p->container_id};
      }
    }
    return std::nullopt;
  }

 private:
  // Opens the netns through one of its processes, oldest first; null when
  // none can be opened. The process may have exited and its pid been reused
  // between stat and open; the fd would then be some other netns.
  NetnsRef open(const NetnsKey& key) {
    auto [it, fresh] = opened_.try_emplace(key);
    if (!fresh) return it->second;
    for (const PodProcess& p : by_netns_.at(key)) {
      const std::string path = deps_.proc_root + "/" + p.pid + "/ns/net";
      auto ns = deps_.open_netns(path);
      if (!ns) {
        log::debug("proc scan: skipping pid {}: {}", p.pid, ns.error().describe());
        continue;
      }
      if ((*ns)->device() != key.first || (*ns)->inode() != key.second) {
        log::debug("proc scan: skipping pid {}: {} changed between stat and open", p.pid, path);
        continue;
      }
      it->second = std::move(*ns);
      break;
    }
    return it->second;
  }

  // Whether the netns holds one of the pod's IPs. A pod without IPs, a
  // netns that cannot be opened or a failed check all count as no.
  bool holds_ips(const NetnsKey& key, const WantedPod& pod) {
    if (pod.ips.empty()) return false;
    auto [it, fresh] = checked_.try_emplace({key, pod.uid}, false);
    if (!fresh) return it->second;
    NetnsRef ns = open(key);
    if (!ns) return false;
    auto owned = deps_.owns_ips(*ns, pod.ips);
    if (!owned) {
      log::warn("proc scan: could not check the IPs of pod {} in netns {}: {}", pod.uid, ns->path(),
                owned.error().describe());
      return false;
    }
    return it->second = *owned;
  }

  const ProcScanDeps& deps_;
  std::map<NetnsKey, std::vector<PodProcess>> by_netns_;  // each oldest first
  std::map<NetnsKey, NetnsRef> opened_;
  std::map<std::pair<NetnsKey, std::string>, bool> checked_;
};

}  // namespace

Result<std::optional<std::pair<std::string, std::string>>> pod_from_cgroup(
    std::string_view content) {
  using Out = std::optional<std::pair<std::string, std::string>>;
  // Every line is "hierarchy-ID:controller-list:path" and is checked before
  // any is matched, as upstream. Lines split like Go's bufio.ScanLines: a
  // final newline ends the last line, and a '\r' before '\n' is dropped.
  std::vector<std::string_view> paths;
  while (!content.empty()) {
    size_t nl = content.find('\n');
    std::string_view line = content.substr(0, nl);
    content.remove_prefix(nl == std::string_view::npos ? content.size() : nl + 1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    size_t c1 = line.find(':');
    size_t c2 = c1 == std::string_view::npos ? c1 : line.find(':', c1 + 1);
    if (c2 == std::string_view::npos) {
      return make_error(Errc::InvalidArgument,
                        "unable to obtain cgroups: cgroup entry has fewer than 2 colons: \"" +
                            std::string(line) + "\"");
    }
    paths.push_back(line.substr(c2 + 1));
  }

  std::string pod_uid, container_id;
  for (std::string_view path : paths) {
    AMBIENT_ASSIGN_OR_RETURN(std::optional<PathMatch> m, match_cgroup_path(path));
    if (!m) continue;  // not a container's cgroup
    if (container_id.empty()) {
      pod_uid = std::move(m->pod_uid);
      container_id = std::move(m->container_id);
    } else if (container_id != m->container_id) {
      return make_error(Errc::InvalidArgument, "multiple container IDs found in cgroups (" +
                                                   container_id + ", " + m->container_id + ")");
    } else if (pod_uid != m->pod_uid) {
      return make_error(Errc::InvalidArgument,
                        "multiple pod UIDs found in cgroups (" + pod_uid + ", " + m->pod_uid + ")");
    }
  }
  if (container_id.empty()) return Out();
  return Out(std::pair(std::move(pod_uid), std::move(container_id)));
}

Result<uint64_t> start_time_from_stat(std::string_view stat_line) {
  size_t paren = stat_line.rfind(')');
  if (paren == std::string_view::npos) {
    return make_error(Errc::InvalidArgument, "invalid stat format (no ')')");
  }
  // After "pid (comm)" come fields 3.., so starttime (22) is the 20th.
  std::string_view rest = stat_line.substr(paren + 1);
  auto is_space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
  };
  std::string_view field;
  for (int i = 0; i < 20; ++i) {
    while (!rest.empty() && is_space(rest.front())) rest.remove_prefix(1);
    if (rest.empty()) return make_error(Errc::InvalidArgument, "not enough fields in stat");
    size_t len = 0;
    while (len < rest.size() && !is_space(rest[len])) ++len;
    field = rest.substr(0, len);
    rest.remove_prefix(len);
  }
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), value);
  if (ec != std::errc() || end != field.data() + field.size()) {
    return make_error(Errc::InvalidArgument,
                      "invalid starttime \"" + std::string(field) + "\" in stat");
  }
  return value;
}

Result<std::map<std::string, FoundNetns>> scan_proc(const ProcScanDeps& deps,
                                                    const std::vector<WantedPod>& wanted) {
  std::map<std::string, const WantedPod*> by_uid;
  // An empty UID is what cri-o container-only paths yield; it names no pod.
  for (const WantedPod& w : wanted) {
    if (!w.uid.empty()) by_uid.emplace(w.uid, &w);
  }
  std::map<std::string, FoundNetns> found;
  if (by_uid.empty()) return found;

  AMBIENT_ASSIGN_OR_RETURN(std::vector<std::string> pids, list_pids(deps.proc_root));
  // Every pod's processes count, wanted or not: the owner of a netns a
  // wanted pod's process visits may be a pod nobody asked about.
  std::map<NetnsKey, std::vector<PodProcess>> by_netns;
  size_t denied = 0;
  std::string first_denied;
  for (size_t i = 0; i < pids.size(); ++i) {
    auto p = read_process(deps, pids[i], i);
    if (!p) {
      // Processes come and go during the scan: expected, so only debug.
      log::debug("proc scan: skipping pid {}: {}", pids[i], p.error().describe());
      const std::error_code& ec = p.error().code;
      if (ec == std::error_code(EACCES, std::system_category()) ||
          ec == std::error_code(EPERM, std::system_category())) {
        if (denied++ == 0) first_denied = p.error().describe();
      }
      continue;
    }
    if (*p) by_netns[(*p)->key].push_back(std::move(**p));
  }
  // Refused, not gone: every pod the scan should find may be among them.
  if (denied > 0) {
    log::warn(
        "proc scan: {} processes could not be read ({}{}); opening another process's "
        "/proc/<pid>/ns needs CAP_SYS_PTRACE (docs/node-agent.md#capabilities)",
        denied, first_denied, denied > 1 ? ", ..." : "");
  }
  // Only a netns that holds a wanted pod's process can be one's.
  std::vector<NetnsKey> relevant;
  for (const auto& [key, procs] : by_netns) {
    if (std::any_of(procs.begin(), procs.end(),
                    [&](const PodProcess& p) { return by_uid.contains(p.uid); })) {
      relevant.push_back(key);
    }
  }
  Pairing pairing(deps, std::move(by_netns));
  std::map<std::string, std::vector<NetnsKey>> owned;  // wanted pod -> the netns it owns
  for (const auto& key : relevant) {
    std::string uid = pairing.owner(key, by_uid);
    if (by_uid.contains(uid)) owned[uid].push_back(key);
  }
  for (const auto& [uid, keys] : owned) {
    if (auto f = pairing.choose(*by_uid.at(uid), keys)) found.emplace(uid, std::move(*f));
  }
  return found;
}

Result<bool> netns_owns_any_ip(const Netns& ns, const std::vector<IpAddress>& ips) {
  bool owned = false;
  // getifaddrs() asks the kernel over a netlink socket, which belongs to the
  // netns of the thread that opens it: the one run_in_netns put inside `ns`.
  auto listed = run_in_netns(ns, [&]() -> Result<> {
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return sys_error("getifaddrs");
    std::unique_ptr<ifaddrs, void (*)(ifaddrs*)> guard(list, &::freeifaddrs);
    for (const ifaddrs* a = list; a != nullptr && !owned; a = a->ifa_next) {
      if (a->ifa_addr == nullptr) continue;
      IpAddress addr;
      if (a->ifa_addr->sa_family == AF_INET) {
        addr.family = AF_INET;
        const auto* sin = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
        std::memcpy(addr.bytes.data(), &sin->sin_addr, 4);
      } else if (a->ifa_addr->sa_family == AF_INET6) {
        addr.family = AF_INET6;
        const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(a->ifa_addr);
        std::memcpy(addr.bytes.data(), &sin6->sin6_addr, 16);
      } else {
        continue;  // AF_PACKET link entries
      }
      addr = addr.unmapped();
      owned = std::any_of(ips.begin(), ips.end(),
                          [&](const IpAddress& ip) { return ip.unmapped() == addr; });
    }
    return {};
  });
  if (!listed) return std::move(listed).error().context("list addresses in netns " + ns.path());
  return owned;
}

Result<ProcScanDeps> real_proc_scan_deps(const std::string& proc_root,
                                         const std::string& host_netns_path) {
  const std::string host_path = host_netns_path.empty() ? proc_root + "/1/ns/net" : host_netns_path;
  struct stat st {};
  if (::stat(host_path.c_str(), &st) != 0) return sys_error("stat host netns " + host_path);
  return ProcScanDeps{
      .proc_root = proc_root,
      .open_netns = [](const std::string& path) -> Result<NetnsRef> {
        AMBIENT_ASSIGN_OR_RETURN(Netns ns, Netns::open(path));
        return NetnsRef(std::make_shared<const Netns>(std::move(ns)));
      },
      .host_netns = {st.st_dev, st.st_ino},
      .owns_ips = &netns_owns_any_ip,
  };
}

}  // namespace ambient::netns
