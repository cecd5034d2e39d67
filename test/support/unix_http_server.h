// The agent's HTTP server on a Unix socket, running for one test: its I/O
// thread and handler pool are stopped and joined by the destructor, also
// when a REQUIRE fails, so no thread is left joinable (std::terminate) and
// nothing keeps serving.
#pragma once

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <string>
#include <thread>

#include "http/server.h"

namespace ambient::test {

class UnixHttpServer {
 public:
  using Server = http::Server<boost::asio::local::stream_protocol>;

  UnixHttpServer(const std::string& path, http::Handler handler, Server::Options opts = {})
      : server_(ioc_, pool_, boost::asio::local::stream_protocol::endpoint(path),
                std::move(handler), std::move(opts)),
        io_([this] { ioc_.run(); }) {}
  ~UnixHttpServer() {
    boost::asio::post(ioc_, [this] { server_.close(); });
    pool_.join();
    ioc_.stop();
    if (io_.joinable()) io_.join();
  }
  UnixHttpServer(const UnixHttpServer&) = delete;
  UnixHttpServer& operator=(const UnixHttpServer&) = delete;

 private:
  boost::asio::io_context ioc_;
  boost::asio::thread_pool pool_{2};
  Server server_;
  std::thread io_;
};

}  // namespace ambient::test
