// HTTP/1.1 over the agent's Unix stream socket (Boost.Beast), one new
// connection per request, bounded by a deadline for the whole exchange.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "lib/result.h"

namespace ambient::cni {

struct HttpReply {
  int status = 0;
  std::string body;
};

class AgentClient {
 public:
  virtual ~AgentClient() = default;
  // Errors are transport failures (connect, timeout, malformed reply) and
  // read like Go's: `Post "http://unix/cmdadd": dial unix PATH: connect: ...`.
  virtual Result<HttpReply> post(const std::string& socket_path, std::string_view target,
                                 const std::string& body, std::chrono::milliseconds timeout) = 0;
};

class UnixHttpClient : public AgentClient {
 public:
  Result<HttpReply> post(const std::string& socket_path, std::string_view target,
                         const std::string& body, std::chrono::milliseconds timeout) override;
};

}  // namespace ambient::cni
