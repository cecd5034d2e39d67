// The agent side of ZDS (docs/zds.md#agent-server): ztunnel connects, we send
// a snapshot of every enrolled pod, then live Add/Del, strictly one message
// in flight per connection, each answered by one Ack in order.
//
// Threading: one accept thread and one thread per connection; callers of
// add()/del() block on a future until their message was acked. Any send
// or ack timeout closes the connection, so a late ack can never be matched
// to a later request (upstream keeps the connection and shifts every reply).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lib/result.h"
#include "lib/unique_fd.h"
#include "metrics/metrics.h"
#include "netns/netns.h"

namespace ambient::zds {

struct WorkloadInfo {
  std::string name, ns, service_account;
};

struct Workload {
  std::string uid;
  WorkloadInfo info;
  netns::NetnsRef netns;  // null: sent as Keep in a snapshot
};

class Connection;

// An AddWorkload on its way: the caller goes on (installing the pod's
// rules) while ztunnel sets the pod up, and collects the ack with wait().
class PendingAdd {
 public:
  PendingAdd(std::string uid, Result<> failed) : uid_(std::move(uid)), failed_(std::move(failed)) {}
  PendingAdd(std::string uid, std::future<Result<>> ack, std::chrono::milliseconds timeout,
             uint64_t connection)
      : uid_(std::move(uid)), ack_(std::move(ack)), timeout_(timeout), connection_(connection) {}
  // The ack's outcome; blocks up to the timeout. Call once.
  Result<> wait();
  // The connection the Add went to (ZdsServer::newest_connection()), 0 if none.
  uint64_t connection() const { return connection_; }

 private:
  std::string uid_;
  Result<> failed_;  // set when nothing was sent
  std::future<Result<>> ack_;
  std::chrono::milliseconds timeout_{0};
  uint64_t connection_ = 0;
};

class ZdsServer {
 public:
  struct Options {
    std::string socket_path;
    std::chrono::milliseconds io_timeout{5000};  // per send and per ack
    // The current set of enrolled pods, for each new connection's snapshot.
    std::function<std::vector<Workload>()> snapshot;
    // False: bind now, accept only after start_accepting(). Used at startup
    // so ztunnel never gets a snapshot before the pod cache is rebuilt (an
    // empty snapshot would drain every workload on the node).
    bool accept_immediately = true;
    // Send to ack, per message type, on every connection (snapshot included).
    metrics::ZdsMetrics metrics;
    // The least time between two accepts: ztunnel reconnects without
    // back-off after some errors (upstream's limit, 5 a second). Tests that
    // reconnect many times lower it.
    std::chrono::milliseconds accept_interval{200};
  };

  // Binds and listens (removing a stale socket file) and starts accepting.
  static Result<std::unique_ptr<ZdsServer>> start(Options opts);
  ~ZdsServer();
  ZdsServer(const ZdsServer&) = delete;
  ZdsServer& operator=(const ZdsServer&) = delete;

  // AddWorkload with the netns fd to the newest connection; succeeds only
  // on an empty Ack. "no ztunnel connection" when none is connected.
  Result<> add(const Workload& w) { return begin_add(w).wait(); }
  // The same, without waiting: the message is queued on the connection.
  PendingAdd begin_add(const Workload& w);
  // DelWorkload to every connection with an id above `newer_than`. Success
  // when none is connected, and for a connection that ends before its ack:
  // ztunnel drops the pod at its next snapshot, as long as the snapshot
  // source no longer names it. A connection may have read its snapshot
  // while the pod was still enrolled, so the caller forgets the pod and
  // then, if newest_connection() moved past the one it read before this
  // call, calls del again for the newer connections.
  // Fails only when a live connection did not answer in time.
  Result<> del(const std::string& uid, uint64_t newer_than = 0);

  void start_accepting();

  size_t connected() const;
  bool has_connection() const { return connected() > 0; }
  // The id of the newest live connection, 0 for none. Another id is
  // another ztunnel process, or the same one reconnected.
  uint64_t newest_connection() const;

 private:
  explicit ZdsServer(Options opts) : opts_(std::move(opts)) {}
  void accept_loop();
  std::vector<std::shared_ptr<Connection>> live_connections() const;

  Options opts_;
  UniqueFd listener_;
  UniqueFd stop_;  // eventfd: wakes the accept loop and connections at shutdown
  UniqueFd go_;    // eventfd: accepting may begin
  std::thread accept_thread_;
  mutable std::mutex mu_;
  std::list<std::shared_ptr<Connection>> conns_;  // oldest first
};

}  // namespace ambient::zds
