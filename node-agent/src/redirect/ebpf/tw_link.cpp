#include "redirect/ebpf/tw_link.h"

#include <bpf/bpf.h>
#include <dirent.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <vector>

#include "lib/unique_fd.h"
#include "log/log.h"

namespace ambient::redirect::ebpf {

namespace {

constexpr std::string_view kPrefix = "netns-";
constexpr std::string_view kRulesPrefix = "rules-netns-";

struct LinkInfo {
  UniqueFd fd;  // invalid: nothing is pinned there
  uint32_t prog_id = 0;
  uint64_t netns_ino = 0;  // 0: the netns is gone (a defunct link)
};

// The link pinned at `path`, if any.
Result<LinkInfo> read_link(const std::string& path) {
  LinkInfo out;
  out.fd = UniqueFd(bpf_obj_get(path.c_str()));
  if (!out.fd.valid()) {
    if (errno == ENOENT) return out;
    return sys_error("open the pinned link " + path);
  }
  bpf_link_info info{};
  uint32_t len = sizeof info;
  if (bpf_obj_get_info_by_fd(out.fd.get(), &info, &len) != 0) {
    return sys_error("read the pinned link " + path);
  }
  if (info.type != BPF_LINK_TYPE_NETNS || info.netns.attach_type != BPF_SK_LOOKUP) {
    return make_error(Errc::Internal, path + " is pinned but is not an sk_lookup netns link");
  }
  out.prog_id = info.prog_id;
  out.netns_ino = info.netns.netns_ino;
  return out;
}

Result<> create(const std::string& dir, const std::string& path, const netns::Netns& ns,
                const LoadedProgram& prog) {
  AMBIENT_RETURN_IF_ERROR(make_pin_dirs(dir));
  UniqueFd link(bpf_link_create(prog.fd, ns.fd(), BPF_SK_LOOKUP, nullptr));
  if (!link.valid()) return sys_error("attach amb_tw_lookup to " + ns.path());
  if (bpf_obj_pin(link.get(), path.c_str()) != 0) return sys_error("pin the link at " + path);
  return {};
}

bool mine_or_adoptable(uint32_t have, const LoadedProgram& prog, const AdoptLink& adopt) {
  return have == prog.id || (adopt && adopt(have));
}

}  // namespace

std::string tw_link_path(const std::string& dir, ino_t netns_ino) {
  return dir + "/" + std::string(kPrefix) + std::to_string(netns_ino);
}

Result<> check_pin_root(const std::string& dir) {
  std::string at = dir;
  struct statfs fs {};
  while (::statfs(at.c_str(), &fs) != 0) {
    if (errno != ENOENT || at.empty() || at == "/") return sys_error("statfs " + at);
    const size_t slash = at.find_last_of('/');
    at = slash == 0 ? "/" : at.substr(0, slash);
  }
  if (static_cast<uint64_t>(fs.f_type) != BPF_FS_MAGIC) {
    return make_error(Errc::Unavailable,
                      at +
                          " is not a bpffs mount, so the pods' sk_lookup links cannot be pinned "
                          "(mount one: mount -t bpf bpf " +
                          at + ")");
  }
  return {};
}

Result<> make_pin_dirs(const std::string& dir) {
  for (size_t at = 1; at <= dir.size(); ++at) {
    if (at != dir.size() && dir[at] != '/') continue;
    const std::string part = dir.substr(0, at);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) return sys_error("mkdir " + part);
  }
  return {};
}

Result<> ensure_tw_link(const std::string& dir, const netns::Netns& ns, const LoadedProgram& prog,
                        const AdoptLink& adopt) {
  const std::string path = tw_link_path(dir, ns.inode());
  AMBIENT_ASSIGN_OR_RETURN(LinkInfo have, read_link(path));
  if (have.fd.valid() && have.netns_ino == ns.inode()) {
    if (mine_or_adoptable(have.prog_id, prog, adopt)) return {};
    if (bpf_link_update(have.fd.get(), prog.fd, nullptr) != 0) {
      return sys_error("replace the program of " + path);
    }
    return {};
  }
  if (have.fd.valid()) {
    // Defunct (its netns is gone) or of an earlier netns with the same
    // inode: not this pod's.
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return sys_error("unpin " + path);
  }
  return create(dir, path, ns, prog);
}

Result<std::optional<std::string>> tw_link_problem(const std::string& dir, const netns::Netns& ns,
                                                   const LoadedProgram& prog,
                                                   const AdoptLink& adopt) {
  const std::string path = tw_link_path(dir, ns.inode());
  AMBIENT_ASSIGN_OR_RETURN(LinkInfo have, read_link(path));
  if (!have.fd.valid() || have.netns_ino != ns.inode()) {
    return std::optional<std::string>("no amb_tw_lookup link pinned at " + path);
  }
  if (!mine_or_adoptable(have.prog_id, prog, adopt)) {
    return std::optional<std::string>("the link pinned at " + path + " holds program " +
                                      std::to_string(have.prog_id) + " instead of this agent's " +
                                      "amb_tw_lookup (" + std::to_string(prog.id) + ")");
  }
  return std::optional<std::string>();
}

Result<> remove_tw_link(const std::string& dir, const netns::Netns& ns) {
  const std::string path = tw_link_path(dir, ns.inode());
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return sys_error("unpin " + path);
  return {};
}

Result<size_t> sweep_defunct_tw_links(const std::string& dir) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) {
    if (errno == ENOENT) return size_t{0};
    return sys_error("list " + dir);
  }
  size_t swept = 0;
  std::vector<std::string> markers;
  while (const dirent* e = ::readdir(d.get())) {
    const std::string_view name(e->d_name);
    if (name.rfind(kRulesPrefix, 0) == 0) markers.emplace_back(name.substr(kRulesPrefix.size()));
    if (name.rfind(kPrefix, 0) != 0) continue;
    const std::string path = dir + "/" + std::string(name);
    auto have = read_link(path);
    if (!have) {
      log::warn("eBPF: {}", have.error().describe());
      continue;
    }
    if (have->fd.valid() && have->netns_ino == 0 && ::unlink(path.c_str()) == 0) ++swept;
  }
  for (const std::string& ino : markers) {
    struct stat st {};
    const std::string link = dir + "/" + std::string(kPrefix) + ino;
    if (::stat(link.c_str(), &st) != 0 && errno == ENOENT) {
      ::rmdir((dir + "/" + std::string(kRulesPrefix) + ino).c_str());
    }
  }
  return swept;
}

std::string rules_marker_path(const std::string& dir, ino_t netns_ino) {
  return dir + "/" + std::string(kRulesPrefix) + std::to_string(netns_ino);
}

bool has_rules_marker(const std::string& dir, const netns::Netns& ns) {
  struct stat st {};
  return ::stat(rules_marker_path(dir, ns.inode()).c_str(), &st) == 0;
}

Result<> add_rules_marker(const std::string& dir, const netns::Netns& ns) {
  AMBIENT_RETURN_IF_ERROR(make_pin_dirs(dir));
  const std::string path = rules_marker_path(dir, ns.inode());
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) return sys_error("mkdir " + path);
  return {};
}

Result<> remove_rules_marker(const std::string& dir, const netns::Netns& ns) {
  const std::string path = rules_marker_path(dir, ns.inode());
  if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return sys_error("rmdir " + path);
  return {};
}

size_t count_rules_markers(const std::string& dir) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) return 0;
  size_t n = 0;
  while (const dirent* e = ::readdir(d.get())) {
    n += std::string_view(e->d_name).rfind(kRulesPrefix, 0) == 0;
  }
  return n;
}

}  // namespace ambient::redirect::ebpf
