#include "emulator.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "lib/text.h"
#include "log.h"
#include "zds.pb.h"
#include "zds/wire.h"

namespace ambient::test {

namespace zdspb = istio::workload::zds;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

// ztunnel's connect back-off: starts at 10 ms and doubles before each
// sleep, so the first sleep is 20 ms (CONNECTION_FAILURE_RETRY_DELAY_MAX_INTERVAL).
constexpr milliseconds kConnectBackoffStart{10};
constexpr milliseconds kConnectBackoffMax{15000};
constexpr milliseconds kHelloBackoffStart{5};
// RETRY_DURATION: failed proxy starts are retried this often while connected.
constexpr milliseconds kPendingRetry{5000};
// ztunnel blocks indefinitely on a full socket; a bound keeps a wedged agent
// from hanging the emulator forever, and is far above any test's deadline.
constexpr milliseconds kSendTimeout{5000};

std::string netns_id(dev_t dev, ino_t ino) {
  return std::to_string(static_cast<unsigned long long>(dev)) + ":" +
         std::to_string(static_cast<unsigned long long>(ino));
}

// A workload's state-file entry after its "state" member.
std::string state_entry(const std::string& name, const std::string& ns,
                        const std::string& service_account, dev_t dev, ino_t ino) {
  return "\"info\":{\"name\":" + text::json_quote(name) + ",\"namespace\":" + text::json_quote(ns) +
         ",\"serviceAccount\":" + text::json_quote(service_account) +
         "},\"netns\":" + text::json_quote(netns_id(dev, ino));
}

std::string hex(const std::string& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes.size() && i < 64; ++i) {
    if (i) out += ' ';
    auto b = static_cast<unsigned char>(bytes[i]);
    out += kDigits[b >> 4];
    out += kDigits[b & 0xf];
  }
  if (bytes.size() > 64) out += " ...";
  return out;
}

}  // namespace

Result<std::unique_ptr<Emulator>> Emulator::create(Options options, int stop_fd) {
  if (options.uds.empty() || options.uds.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return make_error(Errc::InvalidArgument,
                      "--uds path is empty or longer than " +
                          std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes");
  }
  AMBIENT_ASSIGN_OR_RETURN(Recorder recorder, Recorder::open(options.record_path));
  AMBIENT_ASSIGN_OR_RETURN(std::unique_ptr<ListenerServer> server,
                           ListenerServer::start(std::move(recorder)));
  std::unique_ptr<Emulator> e(new Emulator(std::move(options), stop_fd, std::move(server)));
  e->write_state();
  return e;
}

int Emulator::run() {
  milliseconds hello_backoff = kHelloBackoffStart;
  for (;;) {
    UniqueFd sock = connect_with_backoff();
    if (!sock.valid()) {
      log_info("stop requested, exiting");
      return 0;
    }
    reset_connection_state();
    connected_ = true;
    log_info("connected to " + options_.uds);
    write_state();

    zdspb::ZdsHello hello;
    hello.set_version(zdspb::V1);
    auto sent =
        zds::send_message(sock.get(), hello.SerializeAsString(), std::nullopt, kSendTimeout);
    StreamEnd end = StreamEnd::Reconnect;
    if (!sent) {
      hello_backoff = std::min(kConnectBackoffMax, hello_backoff * 2);
      log_warn("node agent announcement failed (" + sent.error().describe() + "), retrying in " +
               std::to_string(hello_backoff.count()) + "ms");
      pollfd p{stop_fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(hello_backoff.count())) > 0) end = StreamEnd::Stop;
    } else {
      log_info("sent hello (08 01)");
      end = serve_connection(sock.get());
      if (snapshot_received_) hello_backoff = kHelloBackoffStart;
    }
    sock.reset();
    reset_connection_state();
    write_state();
    switch (end) {
      case StreamEnd::Stop:
        log_info("stop requested, closing the ZDS connection and all listeners");
        return 0;
      case StreamEnd::ProtocolError:
        log_error("protocol mismatch error while processing stream, shutting down");
        return 1;
      case StreamEnd::Reconnect:
        log_info("reconnecting to " + options_.uds);
        break;
    }
  }
}

bool Emulator::stop_requested() const {
  pollfd p{stop_fd_, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

UniqueFd Emulator::connect_with_backoff() {
  milliseconds backoff = kConnectBackoffStart;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, options_.uds.data(), options_.uds.size());
  for (;;) {
    if (stop_requested()) return UniqueFd();
    UniqueFd sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    std::string err;
    if (!sock.valid()) {
      err = std::string("socket: ") + std::strerror(errno);
    } else if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      return sock;
    } else if (errno == EINPROGRESS) {
      // Like ztunnel: wait for writability (no timeout), then SO_ERROR.
      pollfd p[2] = {{sock.get(), POLLOUT, 0}, {stop_fd_, POLLIN, 0}};
      while (::poll(p, 2, -1) < 0 && errno == EINTR) {
      }
      if (p[1].revents) return UniqueFd();
      int so_error = 0;
      socklen_t len = sizeof so_error;
      ::getsockopt(sock.get(), SOL_SOCKET, SO_ERROR, &so_error, &len);
      if (so_error == 0) return sock;
      err = std::string("connect: ") + std::strerror(so_error);
    } else {
      err = std::string("connect: ") + std::strerror(errno);
    }
    backoff = std::min(kConnectBackoffMax, backoff * 2);
    log_warn("failed to connect to the Istio CNI node agent over \"" + options_.uds +
             "\", is the node agent healthy? details: " + err + ". retrying in " +
             std::to_string(backoff.count()) + "ms");
    pollfd p{stop_fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(backoff.count())) > 0) return UniqueFd();
  }
}

Emulator::StreamEnd Emulator::serve_connection(int sock) {
  for (;;) {
    int timeout = -1;
    if (next_retry_) {
      auto left = std::chrono::duration_cast<milliseconds>(*next_retry_ - steady_clock::now());
      timeout = static_cast<int>(std::max<int64_t>(0, left.count()));
    }
    pollfd p[2] = {{sock, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    int rc = ::poll(p, 2, timeout);
    if (rc < 0) {
      if (errno == EINTR) continue;
      log_error(std::string("poll: ") + std::strerror(errno));
      return StreamEnd::Reconnect;
    }
    if (p[1].revents) return StreamEnd::Stop;
    if (next_retry_ && steady_clock::now() >= *next_retry_) {
      next_retry_.reset();
      retry_pending();
      write_state();
    }
    if (!p[0].revents) continue;

    auto received = zds::receive_message(sock, milliseconds(0));
    if (!received) {
      log_warn("process stream ended: " + received.error().describe());
      return StreamEnd::Reconnect;
    }
    if (received->bytes.empty()) {
      // A 0-byte read is EOF for ztunnel, whether the agent closed or sent
      // an empty datagram. Any fd that came with it is closed by RAII.
      log_info("process stream ended with eof");
      return StreamEnd::Reconnect;
    }
    Outcome outcome;
    if (received->fds.size() > 1) {
      // ztunnel counts fds before anything else, so every fd gets closed.
      outcome = {.ack_error = "failure to read message : Expected 1 FD, got " +
                              std::to_string(received->fds.size()),
                 .next = Next::Reconnect};
    } else if (received->truncated) {
      outcome = {.ack_error = "failure to read message : received truncated message",
                 .next = Next::Reconnect};
    } else {
      outcome = handle_datagram(received->bytes, std::move(received->fds));
    }
    if (outcome.next == Next::Reconnect) {
      log_error("read error, will reconnect: " + outcome.ack_error);
    }

    // State first: a test that saw the ack must find the state file
    // already reflecting that message.
    write_state();
    zdspb::WorkloadResponse response;
    response.mutable_ack()->set_error(outcome.ack_error);
    auto sent = zds::send_message(sock, response.SerializeAsString(), std::nullopt, kSendTimeout);
    if (!sent) {
      log_warn("sending the ack failed: " + sent.error().describe());
    } else {
      log_info(outcome.ack_error.empty()
                   ? std::string("sent ack")
                   : "sent nack error=" + text::json_quote(outcome.ack_error));
    }
    if (outcome.drain_after_ack) server_->remove(*outcome.drain_after_ack);
    if (outcome.next == Next::Exit) return StreamEnd::ProtocolError;
    if (!sent || outcome.next == Next::Reconnect) return StreamEnd::Reconnect;
  }
}

Emulator::Outcome Emulator::handle_datagram(const std::string& bytes, std::vector<UniqueFd> fds) {
  auto read_error = [](const std::string& what) {
    return Outcome{.ack_error = "failure to read message : " + what, .next = Next::Reconnect};
  };
  zdspb::WorkloadRequest req;
  if (!req.ParseFromString(bytes)) {
    log_warn("undecodable request: " + hex(bytes));
    return read_error("failed to decode Protobuf message: WorkloadRequest");
  }
  const auto payload = req.payload_case();
  if (payload == zdspb::WorkloadRequest::PAYLOAD_NOT_SET) {
    log_warn("request without a known payload: " + hex(bytes));
    return read_error("no payload");
  }
  if (payload == zdspb::WorkloadRequest::kAdd && fds.empty()) {
    return read_error("No control message");
  }
  if (payload != zdspb::WorkloadRequest::kAdd && !fds.empty()) {
    return read_error("Unexpected control message");  // the fd closes with `fds`
  }
  auto protocol_error = [](const std::string& what) {
    log_error("failed to process message: ProtocolError(\"" + what + "\")");
    return Outcome{.ack_error = "failure to process message : ProtocolError(\"" + what + "\")",
                   .next = Next::Exit};
  };

  switch (payload) {
    case zdspb::WorkloadRequest::kAdd: {
      ++adds_;
      const auto& add = req.add();
      const auto& wi = add.workload_info();
      log_info("received add uid=" + add.uid() +
               (add.has_workload_info() ? " name=" + wi.name() + " namespace=" + wi.namespace_() +
                                              " serviceAccount=" + wi.service_account()
                                        : std::string(" without workload_info")));
      if (!add.has_workload_info()) {
        return protocol_error("workload_info is required but not present");
      }
      return handle_add(
          add.uid(),
          WorkloadMeta{
              .name = wi.name(), .ns = wi.namespace_(), .service_account = wi.service_account()},
          std::move(fds.front()));
    }
    case zdspb::WorkloadRequest::kKeep:
      ++keeps_;
      log_info("received keep uid=" + req.keep().uid());
      if (snapshot_received_) return protocol_error("pod keep received after snapshot");
      snapshot_names_.insert(req.keep().uid());
      return {};
    case zdspb::WorkloadRequest::kDel:
      ++dels_;
      log_info("received del uid=" + req.del().uid());
      return handle_del(req.del().uid());
    case zdspb::WorkloadRequest::kSnapshotSent:
      log_info("received snapshot_sent");
      if (snapshot_received_) return protocol_error("pod snapshot received already");
      return handle_snapshot_sent();
    case zdspb::WorkloadRequest::PAYLOAD_NOT_SET:
      break;
  }
  return read_error("no payload");
}

Emulator::Outcome Emulator::handle_add(const std::string& uid, const WorkloadMeta& meta,
                                       UniqueFd netns) {
  if (!snapshot_received_) snapshot_names_.insert(uid);
  struct stat st {};
  if (::fstat(netns.get(), &st) != 0) {
    // ztunnel fails here before add_workload, so nothing goes pending.
    Error e = sys_error("fstat netns fd");
    log_error("failed to start proxy: " + e.describe());
    return {.ack_error = "failure to start proxy : " + e.describe()};
  }
  auto existing = proxies_.find(uid);
  if (existing != proxies_.end()) {
    if (existing->second.dev == st.st_dev && existing->second.ino == st.st_ino) {
      log_info("proxy for uid=" + uid + " already runs in netns " + netns_id(st.st_dev, st.st_ino) +
               ": idempotent add");
      return {};
    }
    // The sandbox was re-created with a new netns.
    drain(uid, "netns changed to " + netns_id(st.st_dev, st.st_ino));
  }
  auto started =
      start_proxy(uid, Workload{.meta = meta,
                                .netns = std::move(netns),
                                .dev = st.st_dev,
                                .ino = st.st_ino,
                                .state_entry = state_entry(meta.name, meta.ns, meta.service_account,
                                                           st.st_dev, st.st_ino)});
  if (!started) {
    log_error("failed to start proxy: " + started.error().describe());
    schedule_retry();
    return {.ack_error = "failure to start proxy : " + started.error().describe()};
  }
  return {};
}

Emulator::Outcome Emulator::handle_del(const std::string& uid) {
  if (!snapshot_received_) {
    // ztunnel >= 1.25: the running proxy (if any) goes at reconcile time.
    snapshot_names_.erase(uid);
    pending_.erase(uid);
    return {};
  }
  pending_.erase(uid);
  auto it = proxies_.find(uid);
  if (it == proxies_.end()) {
    log_info("del for uid=" + uid + " without a proxy: no-op");
    return {};
  }
  // ztunnel ACKs before the drain finishes, so listeners close after the ACK.
  uint64_t id = it->second.proxy_id;
  log_info("draining proxy uid=" + uid + " after the ack (del)");
  proxies_.erase(it);
  return {.drain_after_ack = id};
}

Emulator::Outcome Emulator::handle_snapshot_sent() {
  for (auto it = proxies_.begin(); it != proxies_.end();) {
    auto next = std::next(it);
    if (!snapshot_names_.count(it->first)) drain(it->first, "not in the snapshot");
    it = next;
  }
  snapshot_names_.clear();
  snapshot_received_ = true;
  return {};
}

Result<> Emulator::start_proxy(const std::string& uid, Workload w) {
  auto sockets = open_proxy_sockets(w.netns.get());
  if (!sockets) {
    pending_.insert_or_assign(uid, std::move(w));
    return std::move(sockets).error().context("uid " + uid);
  }
  std::string names;
  for (const auto& s : *sockets) names += (names.empty() ? "" : ", ") + s.address;
  w.proxy_id = next_proxy_id_++;
  log_info("proxy up uid=" + uid + " netns=" + netns_id(w.dev, w.ino) + " listeners: " + names);
  server_->add(w.proxy_id, uid, std::move(sockets).value());
  pending_.erase(uid);
  proxies_.insert_or_assign(uid, std::move(w));
  return {};
}

void Emulator::drain(const std::string& uid, const std::string& why) {
  auto it = proxies_.find(uid);
  if (it == proxies_.end()) return;
  log_info("draining proxy uid=" + uid + " (" + why + ")");
  server_->remove(it->second.proxy_id);
  proxies_.erase(it);
}

void Emulator::retry_pending() {
  auto current = std::move(pending_);
  pending_.clear();
  for (auto& [uid, w] : current) {
    log_info("retrying workload " + uid);
    auto started = start_proxy(uid, std::move(w));
    if (!started) log_warn("retrying workload " + uid + " failed: " + started.error().describe());
  }
  if (!pending_.empty()) schedule_retry();
}

void Emulator::schedule_retry() {
  if (next_retry_) return;
  log_info("scheduling retry in " + std::to_string(kPendingRetry.count()) + "ms");
  next_retry_ = steady_clock::now() + kPendingRetry;
}

void Emulator::reset_connection_state() {
  connected_ = false;
  snapshot_received_ = false;
  snapshot_names_.clear();
  pending_.clear();  // ztunnel forgets failed starts of the previous connection
  next_retry_.reset();
}

void Emulator::write_state() const {
  if (options_.state_path.empty()) return;
  std::string workloads;
  auto append = [&](const std::string& uid, const Workload& w, std::string_view state) {
    if (!workloads.empty()) workloads += ',';
    workloads += text::json_quote(uid);
    workloads += ":{\"state\":\"";
    workloads += state;
    workloads += "\",";
    workloads += w.state_entry;
    workloads += '}';
  };
  for (const auto& [uid, w] : proxies_) append(uid, w, "Up");
  for (const auto& [uid, w] : pending_) {
    if (!proxies_.count(uid)) append(uid, w, "Pending");
  }
  const bool ready = snapshot_received_ && pending_.empty();
  std::string json = std::string("{\"connected\":") + (connected_ ? "true" : "false") +
                     ",\"snapshot_received\":" + (snapshot_received_ ? "true" : "false") +
                     ",\"ready\":" + (ready ? "true" : "false") + ",\"workloads\":{" + workloads +
                     "},\"adds\":" + std::to_string(adds_) + ",\"dels\":" + std::to_string(dels_) +
                     ",\"keeps\":" + std::to_string(keeps_) + "}\n";

  // tmp + rename: a reader sees the old or the new file, never half of one.
  const std::string tmp = options_.state_path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) {
    log_error("open " + tmp + ": " + std::strerror(errno));
    return;
  }
  if (::write(fd.get(), json.data(), json.size()) != static_cast<ssize_t>(json.size())) {
    log_error("write " + tmp + ": " + std::strerror(errno));
    return;
  }
  fd.reset();
  if (::rename(tmp.c_str(), options_.state_path.c_str()) != 0) {
    log_error("rename " + tmp + ": " + std::strerror(errno));
  }
}

}  // namespace ambient::test
