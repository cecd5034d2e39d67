// The emulator's per-workload "proxy": the listeners ztunnel binds inside a
// pod's network namespace (docs/zds.md#ztunnel-in-pod), and one thread
// that answers every connection or datagram on them with a line naming the
// workload and the original destination, recording each one for the tests.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lib/result.h"
#include "lib/unique_fd.h"

namespace ambient::test {

inline constexpr uint32_t kPacketMark = 1337;  // ztunnel's shared-mode default
inline constexpr int kListenBacklog = 128;     // ztunnel's in-pod TCP backlog

enum class Proto { Tcp, Udp };

// A socket bound inside a pod netns. It stays in that netns after the
// creating thread exits, so any thread may serve it.
struct BoundSocket {
  UniqueFd fd;
  Proto proto = Proto::Tcp;
  uint16_t port = 0;
  std::string address;  // "[::]:15001", for logs
};

// Creates every listener of one workload inside the netns behind
// `netns_fd`, on a fresh thread that enters the namespace and then dies, so
// no emulator thread ever serves from the wrong namespace. All-or-nothing:
// the first failure closes what was bound and is returned.
Result<std::vector<BoundSocket>> open_proxy_sockets(int netns_fd);

// "ip:port" for IPv4 and v4-mapped IPv6 (unmapped, as ztunnel
// canonicalises them), "[ip]:port" for other IPv6.
std::string format_sockaddr(const sockaddr_storage& addr);

// Appends one JSON line per connection or datagram to --record. Lines go
// out with one O_APPEND write each, so a test tailing the file never sees a
// partial line and nothing sits in a buffer.
class Recorder {
 public:
  static Result<Recorder> open(const std::string& path);  // empty path: disabled
  void record(const std::string& line) const;

 private:
  explicit Recorder(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// Owns every workload listener and serves them from one epoll thread.
// Thread-safety: add() and remove() are called from the ZDS thread; the
// serving thread handles events under mu_, and events carry a listener key
// rather than an fd, so an event for a listener that remove() just closed
// is dropped instead of landing on a reused fd number.
class ListenerServer {
 public:
  static Result<std::unique_ptr<ListenerServer>> start(Recorder recorder);
  ~ListenerServer();
  ListenerServer(const ListenerServer&) = delete;
  ListenerServer& operator=(const ListenerServer&) = delete;

  // Starts serving `sockets` for workload `uid`; `proxy_id` names the group.
  void add(uint64_t proxy_id, const std::string& uid, std::vector<BoundSocket> sockets);
  // Closes the group's listeners (a drain, docs/zds.md#ztunnel-state:
  // listeners close).
  void remove(uint64_t proxy_id);

 private:
  struct Listener {
    uint64_t proxy_id = 0;
    std::string uid;
    BoundSocket socket;
  };

  ListenerServer(Recorder recorder, UniqueFd epoll, UniqueFd wake)
      : recorder_(std::move(recorder)), epoll_(std::move(epoll)), wake_(std::move(wake)) {}
  void serve();
  void on_tcp_ready(const Listener& l);
  void on_udp_ready(const Listener& l);

  Recorder recorder_;
  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd, epoll key 0: stop
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<uint64_t, Listener> listeners_;  // guarded by mu_
  uint64_t next_key_ = 1;                   // guarded by mu_; 0 is the wake fd
  std::thread thread_;
};

}  // namespace ambient::test
