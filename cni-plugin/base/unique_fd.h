// UniqueFd: sole owner of a file descriptor. Move-only, no implicit
// conversion to int, and the moved-from or closed object holds -1 so a
// double close cannot hit an fd number that was reused meanwhile.
#pragma once

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

namespace ambient {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Grows this process's fd table to hold `fds` descriptors (raising the soft
// RLIMIT_NOFILE up to the hard one if needed). Call it while the process
// is single-threaded: when a multi-threaded process outgrows its table
// (64, 128, 256, ... fds), the kernel waits an RCU grace period (10-30 ms)
// inside whichever call needed the new fd, e.g. a pod's netns open.
// Returns the capacity reserved.
inline int reserve_fd_table(int fds) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < static_cast<rlim_t>(fds)) {
    rlimit raised = rl;
    raised.rlim_cur = std::min<rlim_t>(rl.rlim_max, static_cast<rlim_t>(fds));
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  const int top = static_cast<int>(std::min<rlim_t>(rl.rlim_cur, static_cast<rlim_t>(fds))) - 1;
  int fd = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, top);
  if (fd < 0) fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);  // stderr closed: any fd will do
  if (fd >= 0 && fd < top) {
    int high = ::fcntl(fd, F_DUPFD_CLOEXEC, top);
    ::close(fd);
    fd = high;
  }
  if (fd < 0) return 0;
  ::close(fd);
  return top + 1;
}

}  // namespace ambient
