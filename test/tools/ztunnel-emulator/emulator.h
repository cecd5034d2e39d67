// A ztunnel stand-in for end-to-end tests: the client side of ZDS
// (docs/zds.md#emulator) with ztunnel's per-connection state machine
// (docs/zds.md#ztunnel-state) and real listeners inside each pod netns
// (docs/zds.md#ztunnel-in-pod), so tests can check both the protocol
// exchange and where redirected traffic lands.
//
// Threading: everything here runs on the thread that calls run(); the only
// other long-lived thread is the ListenerServer's, which owns the listener
// fds. Proxy start-up spawns one short-lived thread per attempt to enter
// the pod netns.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "lib/result.h"
#include "lib/unique_fd.h"
#include "proxy.h"

namespace ambient::test {

struct Options {
  std::string uds;          // ZDS socket path (INPOD_UDS)
  std::string record_path;  // one JSON line per connection/datagram; empty: off
  std::string state_path;   // JSON snapshot after every message; empty: off
};

class Emulator {
 public:
  // `stop_fd` becomes readable when the process should exit (a signalfd
  // for SIGTERM/SIGINT); it is borrowed, not owned.
  static Result<std::unique_ptr<Emulator>> create(Options options, int stop_fd);

  // Connects, serves, reconnects; returns the process exit code: 0 after a
  // stop request, 1 after a ZDS protocol error (like ztunnel's exit(1)).
  int run();

 private:
  struct WorkloadMeta {
    std::string name;
    std::string ns;
    std::string service_account;
  };
  // A running proxy, or a failed start waiting for a retry. The netns fd
  // stays open for as long as either exists (docs/zds.md#ztunnel-setns).
  struct Workload {
    WorkloadMeta meta;
    UniqueFd netns;
    dev_t dev = 0;
    ino_t ino = 0;
    uint64_t proxy_id = 0;  // running proxies only
    // Its entry in the state file after "state", made once: the whole file
    // is rewritten before every ack, a test harness's cost ztunnel has not.
    std::string state_entry;
  };
  enum class Next { Continue, Reconnect, Exit };
  struct Outcome {
    std::string ack_error;  // "" = ACK
    Next next = Next::Continue;
    std::optional<uint64_t> drain_after_ack;  // Del: ACK first, then close
  };
  enum class StreamEnd { Reconnect, Stop, ProtocolError };

  Emulator(Options options, int stop_fd, std::unique_ptr<ListenerServer> server)
      : options_(std::move(options)), stop_fd_(stop_fd), server_(std::move(server)) {}

  // Returns an invalid fd when a stop was requested while retrying.
  UniqueFd connect_with_backoff();
  StreamEnd serve_connection(int sock);
  Outcome handle_datagram(const std::string& bytes, std::vector<UniqueFd> fds);
  Outcome handle_add(const std::string& uid, const WorkloadMeta& meta, UniqueFd netns);
  Outcome handle_del(const std::string& uid);
  Outcome handle_snapshot_sent();
  Result<> start_proxy(const std::string& uid, Workload w);
  void drain(const std::string& uid, const std::string& why);
  void retry_pending();
  void schedule_retry();
  void reset_connection_state();
  bool stop_requested() const;
  void write_state() const;

  Options options_;
  int stop_fd_;
  std::unique_ptr<ListenerServer> server_;

  std::map<std::string, Workload> proxies_;  // survives reconnects
  uint64_t next_proxy_id_ = 1;

  // Per-connection state (docs/zds.md#ztunnel-state); cleared on every new
  // connection.
  bool connected_ = false;
  bool snapshot_received_ = false;
  std::set<std::string> snapshot_names_;
  std::map<std::string, Workload> pending_;
  std::optional<std::chrono::steady_clock::time_point> next_retry_;

  uint64_t adds_ = 0;
  uint64_t dels_ = 0;
  uint64_t keeps_ = 0;
};

}  // namespace ambient::test
