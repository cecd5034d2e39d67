// HTTPS to a Kubernetes API server, Boost.Beast over OpenSSL: the one
// client of the plugin's fallback (OpenSSL linked statically) and of the
// agent's informers and patches (OpenSSL shared). Each call is bounded by
// a deadline. A request goes on a connection an earlier one left open when
// there is one (a TLS handshake costs both sides more than the request),
// else on a new one; a watch always has its own. The bearer token is
// re-read from its file on every call, so rotated service-account tokens
// work. Calls may come from any number of threads at once.
//
// This file links no TLS library itself: each executable brings its own.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "lib/k8s/kubeconfig.h"
#include "lib/result.h"

namespace ambient::k8s {

struct HttpResult {
  long status = 0;
  std::string body;
};

class KubeHttps {
 public:
  // Checks the server URL (https only) and loads the CA and client
  // certificate into one TLS context shared by all calls.
  static Result<KubeHttps> create(const KubeConfig& cfg, std::string user_agent);
  ~KubeHttps();
  KubeHttps(KubeHttps&&) noexcept;
  KubeHttps& operator=(KubeHttps&&) noexcept;

  // A transport failure is an error (Errc::Timeout when the deadline
  // passed); any HTTP status is a result. When a kept connection fails
  // before any answer, every kept connection is closed, and a request that
  // changes nothing (GET, HEAD, OPTIONS) is sent once more on a new one.
  // All calls must come from one network namespace: a kept connection
  // lives in the one it was opened in.
  Result<HttpResult> request(std::string_view method, const std::string& path,
                             const std::string& body, std::string_view content_type,
                             std::chrono::milliseconds timeout) const;

  // GET `path` and hand each complete line of the body to `on_line` until
  // the stream ends, `on_line` returns false, or `stop` becomes true (seen
  // within 100 ms). The stream is abandoned when no byte arrives for
  // `idle_timeout`. Returns the HTTP status.
  Result<long> stream_lines(const std::string& path,
                            const std::function<bool(std::string_view)>& on_line,
                            const std::atomic<bool>& stop,
                            std::chrono::milliseconds idle_timeout) const;

  const std::string& server() const;

  struct Impl;  // defined in the .cpp, with Boost and OpenSSL

 private:
  explicit KubeHttps(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ambient::k8s
