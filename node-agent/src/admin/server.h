// The admin API's server: gRPC on the Unix socket <run dir>/admin.sock
// (mode 0600), for root, the agent's own user and one configured uid only.
//
// gRPC cannot check a Unix peer's credentials itself, so the server accepts
// on the socket itself, checks SO_PEERCRED, and hands each connection to
// one of two in-process gRPC servers (AddInsecureChannelFromFd): the real
// service, or one whose every call answers PERMISSION_DENIED saying who may
// call, so a refused caller gets a clear status, not a dropped connection.
//
// Threads: one accept thread, plus gRPC's own pool; none of them is the CNI
// handlers' pool, so a slow or stuck admin client never delays an ADD.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <grpcpp/server.h>

#include "admin/service.h"
#include "lib/result.h"
#include "lib/unique_fd.h"

namespace ambient::admin {

inline constexpr std::string_view kAdminSocket = "admin.sock";

// Who may call: root, the agent's own euid, and `extra` when set.
bool peer_allowed(uid_t peer, std::optional<uid_t> extra);

class AdminServer {
 public:
  struct Options {
    std::string socket_path;
    std::optional<uid_t> allowed_uid;  // --admin-uid
  };
  // Binds (replacing a stale socket file), chmods 0600 (chowned to
  // allowed_uid when set), and starts serving.
  static Result<std::unique_ptr<AdminServer>> start(Options opts, AdminSource& src);
  ~AdminServer();  // stops serving, ends open streams, removes the socket file
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

 private:
  AdminServer(Options opts, AdminSource& src);
  void accept_loop();

  Options opts_;
  AdminService service_;
  RefusingService refusing_;
  std::unique_ptr<grpc::Server> server_, refusing_server_;
  UniqueFd listener_, stop_;
  std::thread accept_thread_;
};

}  // namespace ambient::admin
