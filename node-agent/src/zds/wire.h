// ZDS framing: one protobuf message per SOCK_SEQPACKET datagram, the netns
// fd (if any) in one SCM_RIGHTS message of the same sendmsg. Shared by the
// agent's server and the ztunnel emulator so both ends frame identically.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "lib/result.h"
#include "lib/unique_fd.h"

namespace ambient::zds {

// ztunnel reads into a 1024-byte buffer: a larger datagram is truncated.
inline constexpr size_t kMaxMessage = 1024;

// Sends one datagram, waiting at most `timeout` for buffer space. Refuses
// empty and oversized messages (ztunnel reads 0 bytes as EOF).
Result<> send_message(int sock, const std::string& bytes, std::optional<int> pass_fd,
                      std::chrono::milliseconds timeout);

struct Received {
  std::string bytes;          // empty: the peer closed (EOF)
  std::vector<UniqueFd> fds;  // every fd received, owned (never leaked)
  bool truncated = false;     // MSG_TRUNC or MSG_CTRUNC
};

// Waits at most `timeout` for one datagram; Errc::Timeout if none came.
Result<Received> receive_message(int sock, std::chrono::milliseconds timeout);

// ztunnel's reply to one request, as received: the NACK text ("" = acked),
// or an error when it is no reply (EOF, truncated, carrying an fd, not a
// WorkloadResponse with an Ack).
Result<std::string> decode_ack(const Received& r);

// ztunnel's first message: the ZDS version it speaks, or an error when it
// is no hello (EOF, not a ZdsHello).
Result<int> decode_hello(const Received& r);

}  // namespace ambient::zds
