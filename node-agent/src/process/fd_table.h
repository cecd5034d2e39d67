// Start-up tuning of the process's fd table, for the agent (each enrolled
// pod holds a netns fd) and the ztunnel emulator.
#pragma once

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

namespace ambient {

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
