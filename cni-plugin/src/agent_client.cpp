#include "agent_client.h"

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

namespace ambient::cni {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using Local = asio::local::stream_protocol;

Result<HttpReply> UnixHttpClient::post(const std::string& socket_path, std::string_view target,
                                       const std::string& body, std::chrono::milliseconds timeout) {
  const std::string what = "Post \"http://unix" + std::string(target) + "\"";
  asio::io_context ioc;
  Local::socket sock(ioc);
  http::request<http::string_body> req{http::verb::post, std::string(target), 11};
  req.set(http::field::host, "unix");
  req.set(http::field::content_type, "application/json");
  req.set(http::field::user_agent, "istio-cni");
  // One request per run: the agent closes once it has answered instead of
  // waiting for our exit to close the connection.
  req.keep_alive(false);
  req.body() = body;
  req.prepare_payload();

  boost::beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(1 << 20);  // the reply is only ever shown to humans: 1 MiB is plenty
  boost::system::error_code result = asio::error::would_block;
  std::string failed_step;

  sock.async_connect(Local::endpoint(socket_path), [&](boost::system::error_code ec) {
    if (ec) {
      failed_step = "dial unix " + socket_path + ": connect";
      result = ec;
      return;
    }
    http::async_write(sock, req, [&](boost::system::error_code ec2, size_t) {
      // The agent may answer (e.g. 400 for a body too large) before it has
      // read the whole request: read its answer even if writing failed.
      http::async_read(sock, buf, parser, [&, ec2](boost::system::error_code ec3, size_t) {
        failed_step = ec3 && ec2 ? "write" : "read response";
        result = ec3 && ec2 ? ec2 : ec3;
      });
    });
  });
  ioc.run_for(timeout);
  if (result == asio::error::would_block) {
    return make_error(Errc::Timeout, what + ": no answer from the agent within " +
                                         std::to_string(timeout.count()) + " ms");
  }
  if (result) {
    auto code = result == asio::error::not_found || result == asio::error::connection_refused
                    ? Errc::Unavailable
                    : Errc::Internal;
    return make_error(code, what + ": " + failed_step + ": " + result.message());
  }
  auto res = parser.release();
  return HttpReply{.status = static_cast<int>(res.result_int()), .body = std::move(res.body())};
}

}  // namespace ambient::cni
