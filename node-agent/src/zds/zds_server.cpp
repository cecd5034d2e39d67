#include "zds/zds_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>

#include "log/log.h"
#include "zds.pb.h"
#include "zds/wire.h"

namespace ambient::zds {

namespace pb = istio::workload::zds;
using namespace std::chrono_literals;

namespace {

struct Request {
  pb::WorkloadRequest msg;
  netns::NetnsRef netns;  // holds the fd open until the send is done
  std::promise<Result<>> done;
};

std::string describe(const pb::WorkloadRequest& m) {
  switch (m.payload_case()) {
    case pb::WorkloadRequest::kAdd:
      return "Add " + m.add().uid();
    case pb::WorkloadRequest::kDel:
      return "Del " + m.del().uid();
    case pb::WorkloadRequest::kKeep:
      return "Keep " + m.keep().uid();
    case pb::WorkloadRequest::kSnapshotSent:
      return "SnapshotSent";
    default:
      return "unknown";
  }
}

pb::WorkloadRequest add_message(const Workload& w) {
  pb::WorkloadRequest m;
  auto* add = m.mutable_add();
  add->set_uid(w.uid);
  // Always present (ztunnel >= 1.24 exits on an Add without it).
  auto* info = add->mutable_workload_info();
  info->set_name(w.info.name);
  info->set_namespace_(w.info.ns);
  info->set_service_account(w.info.service_account);
  return m;
}

}  // namespace

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(UniqueFd sock, int stop_fd, std::chrono::milliseconds timeout, uint64_t id,
             metrics::ZdsMetrics metrics)
      : metrics_(metrics),
        sock_(std::move(sock)),
        wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
        stop_fd_(stop_fd),
        timeout_(timeout),
        id_(id) {}

  ~Connection() {
    if (thread_.joinable()) thread_.join();
  }

  void run(std::function<std::vector<Workload>()> snapshot, std::function<void()> on_exit) {
    thread_ = std::thread([this, snapshot = std::move(snapshot), on_exit = std::move(on_exit)] {
      serve(snapshot);
      close_all("connection closed before request sent/response received");
      on_exit();
    });
  }

  // Queues a request; its future resolves with the ack outcome.
  std::future<Result<>> submit(pb::WorkloadRequest msg, netns::NetnsRef ns) {
    auto req = std::make_shared<Request>();
    req->msg = std::move(msg);
    req->netns = std::move(ns);
    auto fut = req->done.get_future();
    {
      std::lock_guard lk(mu_);
      if (closed_) {
        req->done.set_value(make_error(Errc::Unavailable, "ztunnel connection closed"));
        return fut;
      }
      queue_.push_back(std::move(req));
    }
    uint64_t one = 1;
    ssize_t n = ::write(wake_.get(), &one, sizeof one);
    (void)n;
    return fut;
  }

  bool closed() const {
    std::lock_guard lk(mu_);
    return closed_;
  }
  uint64_t id() const { return id_; }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  // One request and its ack. Any transport failure or timeout is fatal for
  // the connection (the caller closes it), a NACK is not.
  Result<std::string> exchange(const pb::WorkloadRequest& msg, const netns::NetnsRef& ns) {
    std::string bytes;
    msg.SerializeToString(&bytes);
    std::optional<int> fd;
    if (ns) fd = ns->fd();
    metrics::Timer timer(msg.has_add()    ? metrics_.add
                         : msg.has_del()  ? metrics_.del
                         : msg.has_keep() ? metrics_.keep
                                          : metrics_.snapshot_sent);
    AMBIENT_RETURN_IF_ERROR(send_message(sock_.get(), bytes, fd, timeout_));
    AMBIENT_ASSIGN_OR_RETURN(Received r, receive_message(sock_.get(), timeout_));
    return decode_ack(r);
  }

  void serve(const std::function<std::vector<Workload>()>& snapshot) {
    if (!greet() || !send_snapshot(snapshot())) return;
    for (;;) {
      pollfd fds[3] = {{sock_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      if (::poll(fds, 3, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (fds[2].revents) return;
      if (fds[0].revents) {
        // Outside an exchange ztunnel only ever closes: data here is a bug.
        auto r = receive_message(sock_.get(), 0ms);
        if (r && !r->bytes.empty())
          log::warn("zds conn {}: ztunnel protocol error, unexpected message", id_);
        else
          log::info("zds conn {}: ztunnel disconnected", id_);
        return;
      }
      if (fds[1].revents && !drain_queue()) return;
    }
  }

  // ztunnel speaks first: its hello.
  bool greet() {
    auto hello = receive_message(sock_.get(), 5000ms);
    if (!hello || hello->bytes.empty()) {
      log::warn("zds conn {}: no hello from ztunnel: {}", id_,
                hello ? std::string("EOF") : hello.error().describe());
      return false;
    }
    auto version = decode_hello(*hello);
    if (!version) {
      log::warn("zds conn {}: {}", id_, version.error().describe());
      return false;
    }
    if (*version != pb::V1) log::warn("zds conn {}: unexpected hello version {}", id_, *version);
    log::info("zds conn {}: ztunnel connected, sending snapshot", id_);
    return true;
  }

  // Every enrolled pod (Add, or Keep where its netns is unknown), then
  // SnapshotSent. False: the connection is unusable.
  bool send_snapshot(const std::vector<Workload>& workloads) {
    size_t sent = 0;
    for (const auto& w : workloads) {
      pb::WorkloadRequest m;
      if (w.netns) {
        m = add_message(w);
      } else {
        m.mutable_keep()->set_uid(w.uid);
      }
      auto ack = exchange(m, w.netns);
      if (!ack) {
        log::warn("zds conn {}: snapshot {} failed: {}", id_, describe(m), ack.error().describe());
        return false;
      }
      if (!ack->empty()) log::warn("zds conn {}: ztunnel NACKed {}: {}", id_, describe(m), *ack);
      ++sent;
    }
    pb::WorkloadRequest done;
    done.mutable_snapshot_sent();
    auto ack = exchange(done, nullptr);
    if (!ack) {
      log::warn("zds conn {}: SnapshotSent failed: {}", id_, ack.error().describe());
      return false;
    }
    log::info("zds conn {}: snapshot of {} workloads acked", id_, sent);
    return true;
  }

  // Sends the queued requests one at a time, each waiting for its ack.
  // False: an exchange failed and the connection must close, so a late
  // ack is never read as the next reply.
  bool drain_queue() {
    uint64_t n;
    ssize_t rd = ::read(wake_.get(), &n, sizeof n);
    (void)rd;
    for (;;) {
      std::shared_ptr<Request> req;
      {
        std::lock_guard lk(mu_);
        if (queue_.empty()) return true;
        req = std::move(queue_.front());
        queue_.pop_front();
      }
      auto res = exchange(req->msg, req->netns);
      if (!res) {
        req->done.set_value(std::move(res).error().context(describe(req->msg)));
        log::warn("zds conn {}: closing after a failed exchange", id_);
        return false;
      }
      if (!res->empty()) {
        req->done.set_value(make_error(Errc::Unavailable, "got ack error: " + *res));
      } else {
        req->done.set_value(Result<>());
      }
    }
  }

  void close_all(const std::string& why) {
    std::deque<std::shared_ptr<Request>> pending;
    {
      std::lock_guard lk(mu_);
      closed_ = true;
      pending.swap(queue_);
    }
    for (auto& r : pending) r->done.set_value(make_error(Errc::Unavailable, why));
    sock_.reset();
  }

  const metrics::ZdsMetrics metrics_;
  UniqueFd sock_;
  UniqueFd wake_;
  int stop_fd_;
  std::chrono::milliseconds timeout_;
  uint64_t id_;
  std::thread thread_;
  mutable std::mutex mu_;
  bool closed_ = false;
  std::deque<std::shared_ptr<Request>> queue_;
};

Result<std::unique_ptr<ZdsServer>> ZdsServer::start(Options opts) {
  std::unique_ptr<ZdsServer> s(new ZdsServer(std::move(opts)));
  const auto& path = s->opts_.socket_path;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return make_error(Errc::InvalidArgument, "ZDS socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  ::unlink(path.c_str());  // a stale socket from a previous run
  s->listener_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!s->listener_.valid()) return sys_error("socket(AF_UNIX, SOCK_SEQPACKET)");
  if (::bind(s->listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return sys_error("bind " + path);
  }
  // Each connection is handed every enrolled pod's netns: only ztunnel,
  // which runs as root, may connect (the peer is checked on accept too).
  if (::chmod(path.c_str(), 0600) != 0) return sys_error("chmod 0600 " + path);
  if (::listen(s->listener_.get(), 128) != 0) return sys_error("listen " + path);
  s->stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->stop_.valid()) return sys_error("eventfd");
  s->go_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->go_.valid()) return sys_error("eventfd");
  if (s->opts_.accept_immediately) s->start_accepting();
  s->accept_thread_ = std::thread([p = s.get()] { p->accept_loop(); });
  log::info("zds: listening on {}", path);
  return s;
}

ZdsServer::~ZdsServer() {
  uint64_t one = 1;
  ssize_t n = ::write(stop_.get(), &one, sizeof one);
  (void)n;
  if (accept_thread_.joinable()) accept_thread_.join();
  std::list<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard lk(mu_);
    conns = conns_;
  }
  for (auto& c : conns) c->join();
  ::unlink(opts_.socket_path.c_str());
}

void ZdsServer::start_accepting() {
  uint64_t one = 1;
  ssize_t n = ::write(go_.get(), &one, sizeof one);
  (void)n;
}

void ZdsServer::accept_loop() {
  // Connections queue in the backlog until we may take them.
  pollfd gate[2] = {{go_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
  while (::poll(gate, 2, -1) < 0 && errno == EINTR) {
  }
  if (gate[1].revents) return;
  log::info("zds: accepting ztunnel connections");
  uint64_t next_id = 1;
  auto last_accept = std::chrono::steady_clock::now() - 1s;
  for (;;) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log::error("zds: poll on listener failed: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents) return;
    // ztunnel reconnects without back-off after some errors.
    const auto since = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - last_accept);
    if (since < opts_.accept_interval) {
      pollfd stop{stop_.get(), POLLIN, 0};
      if (::poll(&stop, 1, static_cast<int>((opts_.accept_interval - since).count())) > 0) {
        return;
      }
    }
    UniqueFd sock(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    last_accept = std::chrono::steady_clock::now();
    if (!sock.valid()) {
      log::warn("zds: accept failed: {}", std::strerror(errno));
      continue;
    }
    ucred cred{};
    socklen_t cred_len = sizeof cred;
    if (::getsockopt(sock.get(), SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0) {
      log::warn("zds: cannot identify a connecting peer ({}): closed", std::strerror(errno));
      continue;
    }
    if (cred.uid != 0 && cred.uid != ::geteuid()) {
      log::warn("zds: refused a connection from uid {} (pid {}): only root may be ztunnel",
                cred.uid, cred.pid);
      continue;
    }
    auto conn = std::make_shared<Connection>(std::move(sock), stop_.get(), opts_.io_timeout,
                                             next_id++, opts_.metrics);
    {
      std::lock_guard lk(mu_);
      // Reap finished connections so the list only holds live ones.
      for (auto it = conns_.begin(); it != conns_.end();) {
        if ((*it)->closed()) {
          (*it)->join();
          it = conns_.erase(it);
        } else {
          ++it;
        }
      }
      conns_.push_back(conn);
    }
    conn->run(opts_.snapshot, [] {});
  }
}

std::vector<std::shared_ptr<Connection>> ZdsServer::live_connections() const {
  std::lock_guard lk(mu_);
  std::vector<std::shared_ptr<Connection>> out;
  for (const auto& c : conns_) {
    if (!c->closed()) out.push_back(c);
  }
  return out;
}

size_t ZdsServer::connected() const { return live_connections().size(); }

uint64_t ZdsServer::newest_connection() const {
  uint64_t newest = 0;
  for (const auto& c : live_connections()) newest = std::max(newest, c->id());
  return newest;
}

PendingAdd ZdsServer::begin_add(const Workload& w) {
  auto conns = live_connections();
  if (conns.empty()) {
    return {w.uid, make_error(Errc::Unavailable,
                              "no ztunnel connection (is ztunnel running on this node?)")};
  }
  // Queued behind a snapshot in progress at worst; bounded all the same.
  return {w.uid, conns.back()->submit(add_message(w), w.netns), opts_.io_timeout * 3,
          conns.back()->id()};
}

Result<> PendingAdd::wait() {
  if (!ack_.valid()) return std::move(failed_);
  if (ack_.wait_for(timeout_) != std::future_status::ready) {
    return make_error(Errc::Timeout, "ztunnel did not ack AddWorkload " + uid_ + " in time");
  }
  return ack_.get();
}

Result<> ZdsServer::del(const std::string& uid, uint64_t newer_than) {
  // Queued on every connection at once: one slow ztunnel does not hold
  // back the others' Del.
  std::vector<std::pair<uint64_t, std::future<Result<>>>> sent;
  for (const auto& c : live_connections()) {
    if (c->id() <= newer_than) continue;
    pb::WorkloadRequest m;
    m.mutable_del()->set_uid(uid);
    sent.emplace_back(c->id(), c->submit(std::move(m), nullptr));
  }
  const auto deadline = std::chrono::steady_clock::now() + opts_.io_timeout * 3;
  std::string errors;
  for (auto& [id, fut] : sent) {
    if (fut.wait_until(deadline) != std::future_status::ready) {
      errors += (errors.empty() ? "" : "; ") + std::string("DelWorkload ") + uid +
                " not acked in time on zds conn " + std::to_string(id);
      continue;
    }
    // A NACK is not actionable (ztunnel forgets the pod anyway), and a
    // connection that ended first takes the pod with it (see the header).
    if (auto r = fut.get(); !r) {
      log::info("zds conn {}: DelWorkload {}: {} (ztunnel forgets the pod either way)", id, uid,
                r.error().describe());
    }
  }
  if (!errors.empty()) return make_error(Errc::Unavailable, errors);
  return {};
}

}  // namespace ambient::zds
