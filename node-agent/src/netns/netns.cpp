#include "netns.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <thread>

namespace ambient::netns {

Result<Netns> Netns::open(const std::string& path) {
  if (path.empty()) return make_error(Errc::InvalidArgument, "netns path is empty");
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) return sys_error("open netns " + path);
  struct statfs sfs {};
  if (::fstatfs(fd.get(), &sfs) != 0) return sys_error("fstatfs " + path);
  if (sfs.f_type != NSFS_MAGIC) {
    return make_error(Errc::InvalidArgument,
                      path + " is not a network namespace (not an nsfs file)");
  }
  int type = ::ioctl(fd.get(), NS_GET_NSTYPE);
  if (type != CLONE_NEWNET) {
    return make_error(Errc::InvalidArgument, path + " is a namespace but not a network namespace");
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return sys_error("fstat " + path);
  return Netns(std::move(fd), path, st.st_dev, st.st_ino);
}

Result<Netns> Netns::from_fd_for_test(UniqueFd fd, std::string path) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return sys_error("fstat " + path);
  return Netns(std::move(fd), std::move(path), st.st_dev, st.st_ino);
}

Result<> run_in_netns(const Netns& ns, const std::function<Result<>()>& fn) {
  Result<> out;
  std::thread worker([&] {
    // CLONE_NEWNET alone: the thread keeps the process's mount namespace, so
    // paths like /proc/sys/net resolve in the target netns for this thread.
    if (::setns(ns.fd(), CLONE_NEWNET) != 0) {
      out = sys_error("setns(" + ns.path() + ")");
      return;
    }
    out = fn();
  });
  worker.join();
  return out;
}

}  // namespace ambient::netns
