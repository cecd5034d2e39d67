// Finding pods' network namespaces by scanning /proc
// (docs/node-agent.md#proc-scan). After an agent restart nothing tells us which netns belongs to
// which pod, so we read every process's cgroup path for a pod UID. The pod's IPs only break ties:
// a netns holding several pods' processes (one may be visiting another's netns), or a pod with
// processes in several netns.
//
// Everything that touches the host goes through ProcScanDeps so the unit
// tests can run the scan on upstream's fake /proc fixture.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lib/ip_address.h"
#include "lib/result.h"
#include "netns/netns.h"

namespace ambient::netns {

struct ProcScanDeps {
  std::string proc_root;  // "/proc", "/host/proc" or a fixture directory
  // Opens <proc_root>/<pid>/ns/net. Real: Netns::open (nsfs-checked).
  std::function<Result<NetnsRef>(const std::string& path)> open_netns;
  // (dev, ino) of the host netns, which is never handed out as a pod's.
  std::pair<dev_t, ino_t> host_netns;
  // Does the netns hold any of these IPs? Real: netns_owns_any_ip.
  std::function<Result<bool>(const Netns&, const std::vector<IpAddress>&)> owns_ips;
};

struct WantedPod {
  std::string uid;
  std::vector<IpAddress> ips;  // status.podIPs, for tie-breaks; may be empty
};

struct FoundNetns {
  NetnsRef netns;
  uint64_t start_time = 0;  // of the owning process, in clock ticks since boot
  std::string container_id;
};

// uid -> netns for the wanted pods that were found; pods not found are
// absent. A netns goes to one pod at most. Fails only when proc_root cannot be listed: every
// per-process problem (exited, unreadable, unparseable) skips that process.
Result<std::map<std::string, FoundNetns>> scan_proc(const ProcScanDeps& deps,
                                                    const std::vector<WantedPod>& wanted);

// One /proc/<pid>/cgroup file -> (pod UID in canonical '-' form, container
// ID), nullopt when no line names a container. The UID is empty for cri-o
// paths that carry only the container. Errors: a line with fewer than two
// colons, or lines naming different containers or pods.
// libstdc++'s std::regex recurses once per character a loop consumes: the
// longest line the kernel writes (PATH_MAX) needs about 2 MB of stack, so
// call this (and scan_proc) on a thread with the default 8 MB stack.
Result<std::optional<std::pair<std::string, std::string>>> pod_from_cgroup(
    std::string_view content);

// Field 22 (starttime) of a /proc/<pid>/stat line. The command name may hold
// spaces and ')', so fields are counted after the last ')'.
Result<uint64_t> start_time_from_stat(std::string_view stat_line);

// Real ownership check: lists the interface addresses inside `ns` (entered
// on a throwaway thread by run_in_netns) and compares them, IPv4-mapped
// forms unmapped, with `ips`.
Result<bool> netns_owns_any_ip(const Netns& ns, const std::vector<IpAddress>& ips);

// Real dependencies for `proc_root`. Fails when <proc_root>/1/ns/net cannot
// be stat'ed: without the host netns identity the scan could hand the host
// netns to a pod, so it must not run.
// `host_netns_path` empty = <proc_root>/1/ns/net (the node's init process).
Result<ProcScanDeps> real_proc_scan_deps(const std::string& proc_root,
                                         const std::string& host_netns_path = "");

}  // namespace ambient::netns
