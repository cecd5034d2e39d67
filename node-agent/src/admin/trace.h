// `ambientctl trace`: a real probe through a pod's redirection
// (docs/ambientctl.md#trace). Outbound, a socket made inside the pod's
// netns connects to --to (with the SO_MARK an app or ztunnel would have);
// inbound, a socket made in the node's netns connects to the pod's IP.
// Who accepted is found with NETLINK_SOCK_DIAG in the pod's netns (the
// socket whose peer is the probe's own address), and which rule or
// program decided is read from the backend's counters before and after.
// Sockets are made on netns workers and used from the caller's thread;
// nothing is left behind (SO_LINGER 0: no TIME_WAIT on either side).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "admin.pb.h"
#include "lib/result.h"
#include "netns/netns.h"
#include "netns/sock_diag.h"

namespace ambient::redirect::ebpf {
class Programs;
}

namespace ambient::admin {

inline constexpr uint32_t kZtunnelMark = 0x539;  // 1337, under mask 0xfff

struct TraceTarget {
  const netns::Netns& pod;
  const netns::Netns* host = nullptr;  // the node's netns; null: the agent's own
  std::string backend;                 // iptables-legacy | iptables-nft | nftables | ebpf
  const redirect::ebpf::Programs* ebpf = nullptr;
  bool enrolled = false;
  std::vector<std::string> pod_ips;  // empty: read from the netns (inbound)
  std::chrono::milliseconds timeout{1000};
};

Result<v1::TraceResponse> run_trace(const TraceTarget& t, const v1::TraceRequest& req);

// The pure parts, unit-tested.
struct Endpoint {
  std::string ip;
  uint16_t port = 0;
  bool v6 = false;
  std::string text() const;  // "10.0.0.1:80", "[fd00::1]:80"
};
// "IP:PORT" or "[IPv6]:PORT"; an error says what is wrong.
Result<Endpoint> parse_endpoint(const std::string& s);

// Packet counts by decision: "-t nat -A ISTIO_OUTPUT ... -j REDIRECT
// --to-ports 15001", "istio-ambient-nat istio-output: ... redirect to
// :15001", or an eBPF counter's name.
using CounterMap = std::map<std::string, uint64_t>;
// `iptables-save -c`: the rules of ISTIO_ chains (not the hooks into them).
CounterMap parse_iptables_counters(const std::string& save);
// `nft list ruleset`: the rules with a counter in tables named istio*.
CounterMap parse_nft_counters(const std::string& ruleset);
// "decision (+N)" for each counter that moved, in the map's order.
std::vector<std::string> moved(const CounterMap& before, const CounterMap& after);

// What the probe saw, and the answer's receiver, port, destination and
// explanation made from it.
struct ProbeFacts {
  bool inbound = false, udp = false, enrolled = false;
  uint32_t mark = 0;
  Endpoint dest;        // what the probe connected to
  std::string outcome;  // "connected" | "refused" | "timeout" | "answered" | errno text
  std::optional<netns::TcpSocket> server;         // the pod's socket that accepted
  std::vector<netns::ListeningSocket> listeners;  // the pod's, before the probe
  std::vector<std::string> decisions;
  std::string counters_error;    // counters could not be read: why
  bool ebpf_captured = false;    // an eBPF hand-over to ztunnel was counted
  bool dns_counted = false;      // a DNS redirect/rewrite was counted
  std::string rewritten_source;  // inbound: the source the pod saw, when not the probe's
};
v1::TraceResponse classify(const ProbeFacts& f);

}  // namespace ambient::admin
