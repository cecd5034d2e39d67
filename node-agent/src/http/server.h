// A small HTTP/1.1 server on Boost.Beast, used for the CNI event socket
// (Unix stream) and the health/metrics port (TCP). Parsing and I/O run on
// one io_context thread; handlers may block (they enter namespaces and
// wait for ztunnel), so they run on a separate pool and never on the I/O
// thread.
#pragma once

#include <sys/ioctl.h>

// Boost.Asio's awaitable.hpp uses std::exchange without including it.
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "http/accept_backoff.h"
#include "lib/unique_fd.h"

namespace ambient::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;

struct Request {
  std::string method, target, body;
};

struct Response {
  int status = 200;
  std::string body;
  std::string content_type = "text/plain; charset=utf-8";
};

using Handler = std::function<Response(const Request&)>;

template <class Protocol>
class Server {
 public:
  struct Options {
    size_t body_limit = size_t{64} * 1024;
    int too_large_status = 400;  // the answer to a body over body_limit
    std::chrono::seconds read_timeout{10};
    // Asked once per connection with its socket before anything is read:
    // an answer refuses the connection with it.
    std::function<std::optional<Response>(int fd)> admit;
    // What this server is, for its log lines ("CNI event socket").
    std::string name = "HTTP server";
  };

  Server(asio::io_context& ioc, asio::thread_pool& pool, typename Protocol::endpoint ep,
         Handler handler, Options opts)
      : acceptor_(ioc),
        retry_(ioc),
        backoff_(opts.name),
        pool_(pool),
        handler_(std::move(handler)),
        opts_(std::move(opts)) {
    acceptor_.open(ep.protocol());
    set_close_on_exec(acceptor_.native_handle());
    if constexpr (std::is_same_v<Protocol, asio::ip::tcp>) {
      acceptor_.set_option(asio::socket_base::reuse_address(true));
    }
    acceptor_.bind(ep);
    acceptor_.listen();
    accept();
  }

  // On the io_context's thread.
  void close() {
    boost::system::error_code ec;
    acceptor_.close(ec);
    retry_.cancel();
  }

  typename Protocol::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

 private:
  class Session : public std::enable_shared_from_this<Session> {
   public:
    Session(typename Protocol::socket sock, Server& srv) : stream_(std::move(sock)), srv_(srv) {}

    void start() {
      if (srv_.opts_.admit) {
        if (auto refused = srv_.opts_.admit(stream_.socket().native_handle())) {
          return reply(std::move(*refused), false);
        }
      }
      read();
    }

   private:
    void read() {
      parser_.emplace();
      parser_->body_limit(srv_.opts_.body_limit);
      stream_.expires_after(srv_.opts_.read_timeout);
      bhttp::async_read(
          stream_, buf_, *parser_,
          [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
    }

    void on_read(beast::error_code ec) {
      if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout ||
          ec == asio::error::operation_aborted || ec == asio::error::eof) {
        return close();
      }
      if (ec == bhttp::error::body_limit) {
        return reply(Response{srv_.opts_.too_large_status,
                              "request body too large (limit " +
                                  std::to_string(srv_.opts_.body_limit) + " bytes)\n"},
                     false);
      }
      if (ec) return reply(Response{400, "malformed HTTP request: " + ec.message() + "\n"}, false);
      auto msg = parser_->release();
      keep_alive_ = msg.keep_alive();
      Request req{std::string(msg.method_string()), std::string(msg.target()),
                  std::move(msg.body())};
      stream_.expires_never();
      // Blocking work goes to the pool.
      asio::post(srv_.pool_, [self = this->shared_from_this(), req = std::move(req)] {
        Response r = self->srv_.handler_(req);
        // A small answer is written by the pool thread itself, saving a
        // hand-off back to the I/O thread on every request: no operation
        // on this session is pending while its handler runs, and the
        // socket's buffer takes the answer at once. The rest of the
        // session continues on its executor.
        if (r.body.size() <= kDirectWriteLimit) {
          auto res = make_response(std::move(r), self->keep_alive_);
          beast::error_code wec;
          bhttp::write(self->stream_.socket(), *res, wec);
          // A client that asked to close (`Connection: close`, as the
          // plugin does) and sent nothing more is done, and so is one that
          // has gone (the plugin does not wait for its log request's
          // answer): the exchange ends here, without waking the I/O thread
          // to see it out. A client with bytes still unread gets the
          // lingering close, which keeps them from turning our close into a
          // reset.
          if (wec || (!self->keep_alive_ && self->nothing_unread())) {
            // No shutdown first: it would wake the I/O thread's poll of
            // this very socket. The close alone ends it as gracefully.
            self->stream_.socket().close(wec);
            return;
          }
          asio::post(self->stream_.get_executor(), [self, wec] { self->after_write(wec); });
          return;
        }
        asio::post(self->stream_.get_executor(), [self, r = std::move(r)]() mutable {
          self->reply(std::move(r), self->keep_alive_);
        });
      });
    }

    static constexpr size_t kDirectWriteLimit = 4096;

    // Neither our buffer nor the socket holds bytes past the request.
    bool nothing_unread() {
      if (buf_.size() != 0) return false;
      int pending = 0;
      return ::ioctl(stream_.socket().native_handle(), FIONREAD, &pending) == 0 && pending == 0;
    }

    static std::shared_ptr<bhttp::response<bhttp::string_body>> make_response(Response r,
                                                                              bool keep_alive) {
      auto res = std::make_shared<bhttp::response<bhttp::string_body>>(
          static_cast<bhttp::status>(r.status), 11);
      res->set(bhttp::field::content_type, r.content_type);
      res->keep_alive(keep_alive);
      res->body() = std::move(r.body);
      res->prepare_payload();
      return res;
    }

    void after_write(beast::error_code ec) {
      if (ec) return close();
      if (!keep_alive_) return linger();
      read();
    }

    // An answer written from the session's executor.
    void reply(Response r, bool keep_alive) {
      keep_alive_ = keep_alive;
      auto res = make_response(std::move(r), keep_alive);
      stream_.expires_after(srv_.opts_.read_timeout);
      bhttp::async_write(stream_, *res,
                         [self = this->shared_from_this(), res](beast::error_code ec, size_t) {
                           self->after_write(ec);
                         });
    }

    // After an early answer (e.g. body too large) the client may still be
    // sending: closing now would reset the connection and destroy our
    // answer in flight, so stop sending and discard input for a while.
    void linger() {
      beast::error_code ec;
      stream_.socket().shutdown(asio::socket_base::shutdown_send, ec);
      stream_.expires_after(std::chrono::seconds(2));
      auto sink = std::make_shared<std::array<char, 16384>>();
      drain(sink);
    }

    void drain(std::shared_ptr<std::array<char, 16384>> sink) {
      stream_.async_read_some(asio::buffer(*sink), [self = this->shared_from_this(), sink](
                                                       beast::error_code ec, size_t) {
        if (ec) return self->close();
        self->drain(sink);
      });
    }

    void close() {
      beast::error_code ec;
      stream_.socket().shutdown(asio::socket_base::shutdown_send, ec);
      stream_.close();
    }

    beast::basic_stream<Protocol> stream_;
    Server& srv_;
    beast::flat_buffer buf_;
    std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
    bool keep_alive_ = false;
  };

  void accept() {
    acceptor_.async_accept([this](beast::error_code ec, typename Protocol::socket sock) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
      if (!ec) {
        backoff_.accepted();
        // Not to live on in a command the agent runs meanwhile (iptables,
        // nft): the client would see our close only when that ended.
        set_close_on_exec(sock.native_handle());
        std::make_shared<Session>(std::move(sock), *this)->start();
        return accept();
      }
      if (ec.category() != boost::system::system_category() || !backoff_.must_wait(ec.value())) {
        return accept();
      }
      retry_.expires_after(AcceptBackoff::kRetry);
      retry_.async_wait([this](beast::error_code e) {
        if (e != asio::error::operation_aborted && acceptor_.is_open()) accept();
      });
    });
  }

  typename Protocol::acceptor acceptor_;
  asio::steady_timer retry_;
  AcceptBackoff backoff_;
  asio::thread_pool& pool_;
  Handler handler_;
  Options opts_;
};

}  // namespace ambient::http
