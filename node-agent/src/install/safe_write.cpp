#include "install/safe_write.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <random>

#include "lib/unique_fd.h"
#include "log/log.h"

namespace ambient::install {

namespace fs = std::filesystem;

namespace {

// `dir` itself, not what a symlink in its place names.
Result<UniqueFd> open_dir_nofollow(const std::string& dir, const std::string& what) {
  UniqueFd fd(
      ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.valid()) return fd;
  if (errno == ELOOP || errno == ENOTDIR) {
    struct stat st {};
    const bool link = ::lstat(dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
    Error e =
        make_error(Errc::InvalidArgument, what + " " + dir + " is " +
                                              (link ? "a symbolic link" : "not a directory") +
                                              ": refused, nothing of ours is written through it");
    e.retryable = false;
    return e;
  }
  return sys_error("open " + what + " " + dir);
}

}  // namespace

Result<> write_atomic(const std::string& path, const std::string& content, mode_t mode) {
  const fs::path target(path);
  const std::string dir = target.parent_path().string();
  const std::string name = target.filename().string();
  if (name.empty() || name == "." || name == "..") {
    return make_error(Errc::InvalidArgument, "write " + path + ": not a file name");
  }
  AMBIENT_ASSIGN_OR_RETURN(UniqueFd d, open_dir_nofollow(dir, "directory"));
  std::random_device rd;
  const std::string tmp = name + ".tmp." + std::to_string(rd());
  const std::string tmp_path = (target.parent_path() / tmp).string();
  UniqueFd fd(
      ::openat(d.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
  if (!fd.valid()) return sys_error("create " + tmp_path);
  auto fail = [&](const std::string& step) {
    Error e = sys_error(step + " " + tmp_path);
    ::unlinkat(d.get(), tmp.c_str(), 0);
    return e;
  };
  if (::fchmod(fd.get(), mode) != 0) return fail("chmod");
  for (size_t off = 0; off < content.size();) {
    ssize_t n = ::write(fd.get(), content.data() + off, content.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("write");
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return fail("fsync");
  fd.reset();
  if (::renameat(d.get(), tmp.c_str(), d.get(), name.c_str()) != 0) {
    return fail("rename to " + path + " from");
  }
  return {};
}

Result<> prepare_run_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(Errc::Unavailable, "create run dir " + dir + ": " + ec.message());
  // The checks and the chmod act on this fd, so they are about the
  // directory that is there now, whatever is renamed around it meanwhile.
  AMBIENT_ASSIGN_OR_RETURN(UniqueFd d, open_dir_nofollow(dir, "run dir"));
  struct stat st {};
  if (::fstat(d.get(), &st) != 0) return sys_error("stat run dir " + dir);
  if (st.st_uid != ::geteuid()) {
    log::warn("run dir {} belongs to uid {}, not us: its mode {:o} is left as it is", dir,
              st.st_uid, st.st_mode & 07777);
    return {};
  }
  if ((st.st_mode & 07777 & ~0750) != 0 && ::fchmod(d.get(), st.st_mode & 0750) != 0) {
    return sys_error("chmod 0750 run dir " + dir);
  }
  return {};
}

}  // namespace ambient::install
