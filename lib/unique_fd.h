// UniqueFd: sole owner of a file descriptor. Move-only, no implicit
// conversion to int, and the moved-from or closed object holds -1 so a
// double close cannot hit an fd number that was reused meanwhile.
#pragma once

#include <fcntl.h>
#include <unistd.h>

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

// For an fd a library made without O_CLOEXEC (Asio's sockets): the agent
// spawns commands (iptables, nft) that would otherwise inherit it.
inline void set_close_on_exec(int fd) { ::fcntl(fd, F_SETFD, FD_CLOEXEC); }

}  // namespace ambient
