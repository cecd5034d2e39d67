#include "admin/server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <grpcpp/resource_quota.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_posix.h>

#include "http/accept_backoff.h"
#include "log/log.h"

namespace ambient::admin {

namespace {

std::unique_ptr<grpc::Server> build_server(grpc::Service& svc) {
  grpc::ServerBuilder b;
  b.RegisterService(&svc);
  // A bounded pool: a crowd of watchers cannot take the node's CPU, and
  // each WatchEvents stream holds a thread of it while open.
  grpc::ResourceQuota quota("ambient-admin");
  quota.SetMaxThreads(16);
  b.SetResourceQuota(quota);
  b.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, 1);
  b.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  b.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 2);
  return b.BuildAndStart();
}

std::string refusal(std::optional<uid_t> extra) {
  return "the agent's admin socket serves root (uid 0)" +
         (extra ? ", uid " + std::to_string(*extra) : std::string()) +
         " and the agent's own user only: run ambientctl as root (e.g. `kubectl exec -n "
         "istio-system ds/istio-cni-node -- ambientctl ...`) or start the agent with "
         "--admin-uid <your uid>";
}

}  // namespace

bool peer_allowed(uid_t peer, std::optional<uid_t> extra) {
  return peer == 0 || peer == ::geteuid() || (extra && peer == *extra);
}

AdminServer::AdminServer(Options opts, AdminSource& src)
    : opts_(std::move(opts)), service_(src), refusing_(refusal(opts_.allowed_uid)) {}

Result<std::unique_ptr<AdminServer>> AdminServer::start(Options opts, AdminSource& src) {
  std::unique_ptr<AdminServer> s(new AdminServer(std::move(opts), src));
  const std::string& path = s->opts_.socket_path;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return make_error(Errc::InvalidArgument, "admin socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  s->listener_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!s->listener_.valid()) return sys_error("admin socket");
  ::unlink(path.c_str());
  // Made 0600 from the start: no window in which anyone may connect.
  const mode_t old = ::umask(0177);
  const int bound = ::bind(s->listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (bound != 0) return sys_error("bind admin socket " + path);
  if (s->opts_.allowed_uid && ::chown(path.c_str(), *s->opts_.allowed_uid, -1) != 0) {
    return sys_error("chown admin socket " + path + " to --admin-uid");
  }
  if (::listen(s->listener_.get(), 16) != 0) return sys_error("listen on admin socket " + path);
  s->stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->stop_.valid()) return sys_error("eventfd");
  s->server_ = build_server(s->service_);
  s->refusing_server_ = build_server(s->refusing_);
  if (!s->server_ || !s->refusing_server_) {
    return make_error(Errc::Internal, "cannot start the admin gRPC server");
  }
  s->accept_thread_ = std::thread([p = s.get()] { p->accept_loop(); });
  return s;
}

void AdminServer::accept_loop() {
  http::AcceptBackoff backoff("admin socket");
  for (;;) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log::error("admin socket: poll: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!conn.valid()) {
      if (!backoff.must_wait(errno)) continue;
      pollfd stop{stop_.get(), POLLIN, 0};
      if (::poll(&stop, 1, static_cast<int>(http::AcceptBackoff::kRetry.count())) > 0) return;
      continue;
    }
    backoff.accepted();
    ucred cred{};
    socklen_t len = sizeof cred;
    const bool known = ::getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
    if (known && peer_allowed(cred.uid, opts_.allowed_uid)) {
      grpc::AddInsecureChannelFromFd(server_.get(), conn.release());
      continue;
    }
    if (known) {
      log::warn("admin socket: refused a connection from uid {} (pid {})", cred.uid, cred.pid);
    } else {
      log::warn("admin socket: cannot identify the peer ({}): refused", std::strerror(errno));
    }
    grpc::AddInsecureChannelFromFd(refusing_server_.get(), conn.release());
  }
}

AdminServer::~AdminServer() {
  if (stop_.valid()) {
    const uint64_t one = 1;
    ssize_t n = ::write(stop_.get(), &one, sizeof one);
    (void)n;
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  service_.stop();
  // Calls still running (a stream) get a moment to end, then are cancelled.
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(1);
  if (server_) server_->Shutdown(deadline);
  if (refusing_server_) refusing_server_->Shutdown(deadline);
  if (listener_.valid()) ::unlink(opts_.socket_path.c_str());
}

}  // namespace ambient::admin
