#include "lib/k8s/kube_https.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <iterator>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

#include "lib/unique_fd.h"

namespace ambient::k8s {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace detail {
class Exchange;
}

struct KubeHttps::Impl {
  Impl();
  ~Impl();
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // A connection a finished request left open, or none.
  std::unique_ptr<detail::Exchange> take_idle() const;
  void keep_idle(std::unique_ptr<detail::Exchange> x) const;
  // Closes every kept connection: one of them failed, and the others went
  // to the same server.
  void drop_idle() const;

  std::string server, host, port, user_agent;
  std::string token, token_file;
  bool insecure = false;
  // OpenSSL contexts are safe to share once set up; calls only make
  // sessions from it.
  mutable ssl::context tls{ssl::context::tls_client};

 private:
  struct Idle {
    std::unique_ptr<detail::Exchange> x;
    Clock::time_point since;
  };
  void expire_locked(std::vector<Idle>& to) const;
  mutable std::mutex idle_mu_;
  mutable std::vector<Idle> idle_;  // newest last
};

namespace {

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

enum class Ended { Done, Timeout, Stopped };

}  // namespace

namespace detail {

// A kept connection whose server died without closing it would hang the
// next request for its whole deadline: TCP keepalive probes find it while
// it is idle (reusable() then sees the error), and a request's bytes left
// unacknowledged fail it after kUserTimeoutMs.
void keep_probing(int fd) {
  constexpr int kIdle = 5, kInterval = 5, kCount = 2;  // seconds, probes
  constexpr int kUserTimeoutMs = 15000;
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &kIdle, sizeof kIdle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &kInterval, sizeof kInterval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &kCount, sizeof kCount);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &kUserTimeoutMs, sizeof kUserTimeoutMs);
}

// One connection and its calls, each run to completion on the calling
// thread. A pending operation that outlives its deadline, or `stop`, is
// cancelled, which completes it with an error.
class Exchange {
 public:
  Exchange(const KubeHttps::Impl& k, const std::string& path, const std::atomic<bool>* stop)
      : k_(k), what_("kubernetes API " + k.server + path), stop_(stop), stream_(ioc_, k.tls) {}

  // The next request on a connection kept open names its own path.
  void retarget(const std::string& path) { what_ = "kubernetes API " + k_.server + path; }

  // Whether a kept connection can carry another request: nothing of an
  // earlier answer is left over, and the server has neither closed it nor
  // sent anything (a TLS close_notify, an unrequested answer) since.
  bool reusable() {
    if (buf_.size() != 0) return false;
    auto& sock = tcp().socket();
    if (!sock.is_open()) return false;
    char c;
    const ssize_t n = ::recv(sock.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }

  Result<> open(Clock::duration timeout) {
    const auto deadline = Clock::now() + timeout;
    // Asio resolves on a thread of the resolver's io_context, which lives
    // as long as that io_context: a temporary one takes it away again,
    // where this connection's own may be kept open for later requests.
    asio::io_context resolving;
    asio::ip::tcp::resolver resolver(resolving);
    asio::ip::tcp::resolver::results_type endpoints;
    AMBIENT_RETURN_IF_ERROR(run_on(
        resolving, "resolve " + k_.host, deadline,
        [&](auto done) {
          resolver.async_resolve(k_.host, k_.port, [&, done](auto ec, auto results) {
            endpoints = std::move(results);
            done(ec);
          });
        },
        [&] { resolver.cancel(); }));
    AMBIENT_RETURN_IF_ERROR(run(
        "connect", deadline,
        [&](auto done) {
          tcp().async_connect(endpoints, [done](auto ec, const auto&) { done(ec); });
        },
        [&] { tcp().cancel(); }));
    // Small writes (TLS records of a request) must not wait for the
    // server's delayed ACK under Nagle: 40 ms per request otherwise.
    boost::system::error_code nodelay_ec;
    tcp().socket().set_option(asio::ip::tcp::no_delay(true), nodelay_ec);
    keep_probing(tcp().socket().native_handle());
    set_close_on_exec(tcp().socket().native_handle());  // a kept one outlives many spawns
    if (!k_.insecure) stream_.set_verify_callback(ssl::host_name_verification(k_.host));
    // SNI only for names (RFC 6066 forbids IP literals).
    boost::system::error_code addr_ec;
    asio::ip::make_address(k_.host, addr_ec);
    if (addr_ec) SSL_set_tlsext_host_name(stream_.native_handle(), k_.host.c_str());
    return run(
        "TLS handshake", deadline,
        [&](auto done) { stream_.async_handshake(ssl::stream_base::client, done); },
        [&] { tcp().cancel(); });
  }

  template <class Body>
  Result<> write(http::request<Body>& req, Clock::duration timeout) {
    req.set(http::field::host, k_.host);
    req.set(http::field::user_agent, k_.user_agent);
    req.set(http::field::accept, "application/json");
    const std::string token = k_.token_file.empty() ? k_.token : trim(read_file(k_.token_file));
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    req.prepare_payload();
    return run(
        "write request", Clock::now() + timeout,
        [&](auto done) { http::async_write(stream_, req, [done](auto ec, size_t) { done(ec); }); },
        [&] { tcp().cancel(); });
  }

  template <class Parser>
  Result<> read(Parser& parser, Clock::duration timeout) {
    return run(
        "read response", Clock::now() + timeout,
        [&](auto done) {
          http::async_read(stream_, buf_, parser, [done](auto ec, size_t) { done(ec); });
        },
        [&] { tcp().cancel(); });
  }

  // Whatever arrived (a watch sends a chunk per event): async_read would
  // wait for the whole buffer or the end of the message.
  template <class Parser>
  Result<> read_some(Parser& parser, Clock::duration timeout) {
    return run(
        "read response", Clock::now() + timeout,
        [&](auto done) {
          http::async_read_some(stream_, buf_, parser, [done](auto ec, size_t) {
            done(ec == http::error::need_buffer ? boost::system::error_code() : ec);
          });
        },
        [&] { tcp().cancel(); });
  }

  template <class Parser>
  Result<> read_header(Parser& parser, Clock::duration timeout) {
    return run(
        "read response header", Clock::now() + timeout,
        [&](auto done) {
          http::async_read_header(stream_, buf_, parser, [done](auto ec, size_t) { done(ec); });
        },
        [&] { tcp().cancel(); });
  }

  bool stopped() const { return stop_ && stop_->load(); }

 private:
  beast::tcp_stream& tcp() { return beast::get_lowest_layer(stream_); }

  template <class Start, class Cancel>
  Result<> run(const std::string& step, Clock::time_point deadline, Start start, Cancel cancel) {
    return run_on(ioc_, step, deadline, start, cancel);
  }

  // Starts an operation with `start(done)` and runs `ioc` until done() was
  // called, checking the deadline and `stop` every 100 ms.
  template <class Start, class Cancel>
  Result<> run_on(asio::io_context& ioc, const std::string& step, Clock::time_point deadline,
                  Start start, Cancel cancel) {
    bool finished = false;
    boost::system::error_code result;
    start([&](boost::system::error_code ec) {
      result = ec;
      finished = true;
    });
    Ended why = Ended::Done;
    while (!finished) {  // NOLINT(bugprone-infinite-loop): set by the handler above, by reference
      ioc.restart();
      ioc.run_for(100ms);
      if (finished || why != Ended::Done) continue;
      if (stopped()) {
        why = Ended::Stopped;
        cancel();
      } else if (Clock::now() >= deadline) {
        why = Ended::Timeout;
        cancel();
      }
    }
    if (why == Ended::Timeout)
      return make_error(Errc::Timeout, what_ + ": " + step + ": timed out");
    if (why == Ended::Stopped) return make_error(Errc::Unavailable, what_ + ": stopped");
    if (result) {
      return make_error(Errc::Unavailable, what_ + ": " + step + ": " + result.message());
    }
    return {};
  }

  const KubeHttps::Impl& k_;
  std::string what_;
  const std::atomic<bool>* stop_;
  asio::io_context ioc_;
  beast::ssl_stream<beast::tcp_stream> stream_;
  beast::flat_buffer buf_;
};

}  // namespace detail

namespace {

using detail::Exchange;

// Connecting has its own, shorter bound: a dead server shows up fast.
constexpr auto kConnectTimeout = 5s;

// Connections kept open between requests (docs/node-agent.md#api-connections):
// enough for the agent's concurrent enrollments to each find one, and
// dropped well before a load balancer in front of the API server forgets
// them silently.
constexpr size_t kMaxIdle = 8;
constexpr auto kMaxIdleTime = 30s;

// Requests that change nothing may be sent again. PUT and DELETE are
// idempotent too (RFC 9110 9.2.2), but the API server answers a repeated
// one with 409 or 404 after the first took effect, so they are not (as in
// Go's net/http, which client-go uses).
bool repeatable(http::verb v) {
  return v == http::verb::get || v == http::verb::head || v == http::verb::options;
}

}  // namespace

KubeHttps::Impl::Impl() = default;
KubeHttps::Impl::~Impl() = default;

// Moves the connections kept longer than kMaxIdleTime (the oldest come
// first) out of `idle` into `to`.
void KubeHttps::Impl::expire_locked(std::vector<Idle>& to) const {
  const auto oldest_kept = Clock::now() - kMaxIdleTime;
  auto end = idle_.begin();
  while (end != idle_.end() && end->since <= oldest_kept) ++end;
  std::move(idle_.begin(), end, std::back_inserter(to));
  idle_.erase(idle_.begin(), end);
}

// In each of these, `stale` is declared before the lock, so the connections
// it takes are closed after the lock is released.
std::unique_ptr<Exchange> KubeHttps::Impl::take_idle() const {
  std::vector<Idle> stale;
  std::unique_ptr<Exchange> found;
  std::lock_guard lk(idle_mu_);
  expire_locked(stale);
  while (!idle_.empty() && !found) {
    Idle last = std::move(idle_.back());
    idle_.pop_back();
    if (last.x->reusable()) {
      found = std::move(last.x);
    } else {
      stale.push_back(std::move(last));
    }
  }
  return found;
}

void KubeHttps::Impl::keep_idle(std::unique_ptr<Exchange> x) const {
  std::vector<Idle> stale;
  std::lock_guard lk(idle_mu_);
  expire_locked(stale);
  if (idle_.size() >= kMaxIdle) {  // the oldest goes
    stale.push_back(std::move(idle_.front()));
    idle_.erase(idle_.begin());
  }
  idle_.push_back({std::move(x), Clock::now()});
}

void KubeHttps::Impl::drop_idle() const {
  std::vector<Idle> stale;
  std::lock_guard lk(idle_mu_);
  stale.swap(idle_);
}

KubeHttps::KubeHttps(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KubeHttps::~KubeHttps() = default;
KubeHttps::KubeHttps(KubeHttps&&) noexcept = default;
KubeHttps& KubeHttps::operator=(KubeHttps&&) noexcept = default;

const std::string& KubeHttps::server() const { return impl_->server; }

Result<KubeHttps> KubeHttps::create(const KubeConfig& cfg, std::string user_agent) {
  auto k = std::make_unique<Impl>();
  k->server = cfg.server;
  k->user_agent = std::move(user_agent);
  if (cfg.server.rfind("https://", 0) != 0) {
    return make_error(Errc::InvalidArgument, "kubeconfig server must be https: " + cfg.server);
  }
  std::string hostport = cfg.server.substr(8);
  if (auto slash = hostport.find('/'); slash != std::string::npos) hostport.resize(slash);
  if (!hostport.empty() && hostport.front() == '[') {  // [v6]:port
    auto close = hostport.find(']');
    if (close == std::string::npos) {
      return make_error(Errc::InvalidArgument, "kubeconfig server: unclosed '[': " + cfg.server);
    }
    k->host = hostport.substr(1, close - 1);
    k->port = close + 2 < hostport.size() ? hostport.substr(close + 2) : "443";
  } else if (auto colon = hostport.rfind(':'); colon != std::string::npos) {
    k->host = hostport.substr(0, colon);
    k->port = hostport.substr(colon + 1);
  } else {
    k->host = hostport;
    k->port = "443";
  }
  if (k->host.empty()) {
    return make_error(Errc::InvalidArgument, "kubeconfig server has no host: " + cfg.server);
  }
  k->insecure = cfg.insecure;
  k->token = trim(cfg.token);
  k->token_file = cfg.token_file;
  boost::system::error_code ec;
  if (cfg.insecure) {
    k->tls.set_verify_mode(ssl::verify_none);
  } else {
    k->tls.set_verify_mode(ssl::verify_peer);
    const std::string ca = !cfg.ca_data.empty() ? cfg.ca_data : read_file(cfg.ca_file);
    if (!ca.empty()) {
      k->tls.add_certificate_authority(asio::buffer(ca), ec);
      if (ec) return make_error(Errc::InvalidArgument, "kubeconfig CA: " + ec.message());
    } else if (!cfg.ca_file.empty()) {
      return make_error(Errc::InvalidArgument,
                        "kubeconfig CA file " + cfg.ca_file + " is missing or empty");
    } else {
      k->tls.set_default_verify_paths(ec);
    }
  }
  if (!cfg.client_cert_data.empty()) {
    k->tls.use_certificate_chain(asio::buffer(cfg.client_cert_data), ec);
    if (!ec) k->tls.use_private_key(asio::buffer(cfg.client_key_data), ssl::context::pem, ec);
    if (ec) return make_error(Errc::InvalidArgument, "kubeconfig client cert: " + ec.message());
  }
  return KubeHttps(std::move(k));
}

Result<HttpResult> KubeHttps::request(std::string_view method, const std::string& path,
                                      const std::string& body, std::string_view content_type,
                                      std::chrono::milliseconds timeout) const {
  const http::verb verb = http::string_to_verb({method.data(), method.size()});
  if (verb == http::verb::unknown) {
    return make_error(Errc::InvalidArgument, "unknown HTTP method " + std::string(method));
  }
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    std::unique_ptr<Exchange> x = impl_->take_idle();
    const bool reused = x != nullptr;
    if (reused) {
      x->retarget(path);
    } else {
      x = std::make_unique<Exchange>(*impl_, path, nullptr);
      AMBIENT_RETURN_IF_ERROR(
          x->open(std::min<Clock::duration>(deadline - Clock::now(), kConnectTimeout)));
    }
    http::request<http::string_body> req{verb, path, 11};
    if (!content_type.empty()) req.set(http::field::content_type, std::string(content_type));
    req.body() = body;
    http::response_parser<http::string_body> parser;
    parser.body_limit(256u << 20);  // a node's pods or the cluster's namespaces
    Result<> sent = x->write(req, deadline - Clock::now());
    if (sent) sent = x->read(parser, deadline - Clock::now());
    if (!sent) {
      // The others were opened to the same server: after a failover or a
      // restart they are as dead as this one.
      if (reused) impl_->drop_idle();
      // A kept connection the server closed just as it was taken: nothing
      // of an answer came back, so a request that changes nothing goes
      // again, on a new connection. Others (a PATCH, the POST of an
      // Event) are the caller's to retry.
      if (reused && !parser.got_some() && repeatable(verb) && Clock::now() < deadline) continue;
      return std::move(sent).error();
    }
    const bool keep = parser.keep_alive();  // also false for a body that ended with the connection
    auto res = parser.release();
    if (keep) impl_->keep_idle(std::move(x));
    return HttpResult{.status = static_cast<long>(res.result_int()), .body = std::move(res.body())};
  }
}

Result<long> KubeHttps::stream_lines(const std::string& path,
                                     const std::function<bool(std::string_view)>& on_line,
                                     const std::atomic<bool>& stop,
                                     std::chrono::milliseconds idle_timeout) const {
  Exchange x(*impl_, path, &stop);
  AMBIENT_RETURN_IF_ERROR(x.open(kConnectTimeout));
  http::request<http::empty_body> req{http::verb::get, path, 11};
  AMBIENT_RETURN_IF_ERROR(x.write(req, idle_timeout));
  http::response_parser<http::buffer_body> parser;
  // A watch has no end. Not boost::none: Boost 1.74 compares a
  // Content-Length with an empty limit as exceeding it, so every error
  // answer with a body (410 Gone, 5xx) failed as "body limit exceeded".
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  // A read cut short by `stop` is no error: the caller asked for it.
  auto ended = [&](Error e) -> Result<long> {
    if (x.stopped()) return static_cast<long>(parser.get().result_int());
    return e;
  };
  if (auto r = x.read_header(parser, idle_timeout); !r) return ended(std::move(r).error());
  const long status = parser.get().result_int();
  std::string pending;
  char chunk[16384];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof chunk;
    if (auto r = x.read_some(parser, idle_timeout); !r) return ended(std::move(r).error());
    pending.append(chunk, sizeof chunk - parser.get().body().size);
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string_view line(pending.data() + start, nl - start);
      if (!line.empty() && !on_line(line)) return status;
    }
    pending.erase(0, start);
    if (x.stopped()) return status;
  }
  if (!pending.empty()) on_line(pending);  // a last line without newline
  return status;
}

}  // namespace ambient::k8s
