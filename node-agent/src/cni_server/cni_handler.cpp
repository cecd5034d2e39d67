#include "cni_server/cni_handler.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "lib/cni_event.h"
#include "log/log.h"

namespace ambient::cni_server {

http::Response CniHandler::handle(const http::Request& req) {
  const bool add = req.target == cni::kCmdAddPath;
  const bool del = req.target == cni::kCmdDelPath;
  if (!add && !del) return {404, "404 page not found\n"};
  auto count = [&](int status) {
    if (!add) return;
    metrics::inc(status == 200   ? metrics_.requests_200
                 : status == 400 ? metrics_.requests_400
                                 : metrics_.requests_500);
  };
  std::optional<metrics::Timer> whole;
  if (add) whole.emplace(metrics_.cmdadd);
  auto ev = [&] {
    std::optional<metrics::Timer> t;
    if (add) t.emplace(metrics_.parse);
    return cni::decode_event(req.body);
  }();
  if (!ev) {
    count(400);
    log::warn("{}: bad request: {}", req.target, ev.error().describe());
    return {400, ev.error().describe() + "\n"};
  }
  auto r = add ? agent_.cmd_add(*ev) : agent_.cmd_del(*ev);
  if (!r) {
    count(500);
    log::error("{}: {}", req.target, r.error().describe());
    return {500, r.error().describe() + "\n"};
  }
  count(200);
  return {200, ""};
}

}  // namespace ambient::cni_server
