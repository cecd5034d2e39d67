// The sockets of a network namespace, as the kernel's NETLINK_SOCK_DIAG
// reports them (what `ss -ltun` reads): TCP listeners and bound UDP
// sockets, IPv4 and IPv6. Used to see whether ztunnel's listeners exist in
// a pod's netns, without entering any process.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lib/result.h"
#include "lib/unique_fd.h"

namespace ambient::netns {

struct ListeningSocket {
  std::string proto;    // "tcp" | "udp"
  std::string address;  // "0.0.0.0", "::", "127.0.0.1", ...
  uint16_t port = 0;
  uint64_t inode = 0;
  uint32_t mark = 0;                // SO_MARK (the kernel reports it to CAP_NET_ADMIN callers)
  std::optional<bool> transparent;  // IP_TRANSPARENT, where the kernel reports it (5.10+)
  std::string endpoint() const;     // "tcp [::]:15001"
};

// The calling thread's netns: run it inside the pod's (run_in_netns), as
// a netlink socket answers for the netns it was made in. Sorted by proto,
// port, address. `tcp_only` skips the UDP dumps.
Result<std::vector<ListeningSocket>> listening_sockets_here(bool tcp_only = false);

// A TCP socket in any state (a trace's probe looks for the socket that
// accepted its connection): addresses as text, ports in host order.
struct TcpSocket {
  std::string local_address, remote_address;
  uint16_t local_port = 0, remote_port = 0;
  uint8_t state = 0;   // the kernel's TCP_* state (10 = listen, 6 = time-wait)
  uint64_t inode = 0;  // 0 for a socket not (or no longer) held by a process
  uint32_t mark = 0;   // not reported for time-wait sockets
};

// A NETLINK_SOCK_DIAG socket of the calling thread's netns: open it inside
// a netns (run_in_netns) and dump from any thread afterwards.
Result<UniqueFd> open_sock_diag_here();
// Every TCP socket (IPv4 and IPv6, every state) of the netns `diag` was
// opened in.
Result<std::vector<TcpSocket>> tcp_sockets(const UniqueFd& diag);

// ztunnel's in-pod listeners (docs/redirection.md#constants) that are not
// in `socks`, as "tcp/15001", ...; DNS (tcp and udp 15053) only when
// `dns_capture`.
std::vector<std::string> missing_ztunnel_listeners(const std::vector<ListeningSocket>& socks,
                                                   bool dns_capture);

}  // namespace ambient::netns
