// Host-side probe SNAT (docs/redirection.md#host-probe-snat): kubelet's
// health probes to enrolled pods leave the host netns with the probe address
// as source, so the in-pod rules can let them past ztunnel. The state is one
// SNAT rule set plus an address set of enrolled pod IPs, each entry commented
// with its pod UID.
//
// One interface, two mechanisms: iptables + ipset (redirect/iptables/host.h)
// and nftables (redirect/nftables/host.h). Nothing here enters a namespace: every call acts
// on the calling thread's netns (the agent calls from the host netns; tests
// from a thread inside a netns that plays the host).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/ip_address.h"
#include "lib/result.h"
#include "redirect/backend.h"

namespace ambient::redirect {

inline constexpr std::string_view kProbeSetV4 = "istio-inpod-probes-v4";
inline constexpr std::string_view kProbeSetV6 = "istio-inpod-probes-v6";
inline constexpr std::string_view kHostChain = "ISTIO_POSTRT";          // iptables, nat table
inline constexpr std::string_view kHostNftTable = "istio-ambient-nat";  // family inet

// The probe set holding the pod IPs of one IP family.
constexpr std::string_view probe_set_name(IpFamily ip) {
  return ip == IpFamily::V6 ? kProbeSetV6 : kProbeSetV4;
}

// The IP family of an address (AF_INET6: V6).
inline IpFamily ip_family_of(const IpAddress& addr) {
  return addr.family == AF_INET6 ? IpFamily::V6 : IpFamily::V4;
}

// Which host sockets get SNATed.
enum class ProbeMatch {
  KubeletUid,    // only sockets owned by kubelet's UID (our default, both backends)
  SocketExists,  // any local socket: upstream's iptables rule (golden);
                 // see docs/field-lessons.md#p12
};

struct HostProbeConfig {
  bool ipv6 = false;
  std::string snat_v4 = std::string(kDefaultProbeSnatIpv4);
  std::string snat_v6 = std::string(kDefaultProbeSnatIpv6);
  ProbeMatch match = ProbeMatch::KubeletUid;
  uid_t kubelet_uid = 0;  // used with ProbeMatch::KubeletUid (kubelet_uid.h finds it)
};

struct ProbeSetEntry {
  IpAddress ip;
  std::string uid;  // the entry's comment: the owning pod's UID ("" if none)
};

// Thread-safe: calls may come from several threads at once (each acts on its
// own calling thread's netns); the libraries' global state is locked inside.
class HostRedirect {
 public:
  virtual ~HostRedirect() = default;
  virtual std::string_view name() const = 0;

  // Creates the sets if missing, then replaces our rules atomically: a
  // second call leaves exactly one copy, and set entries are never lost.
  virtual Result<> install_rules(const HostProbeConfig& cfg) = 0;
  // Idempotent; keeps the sets and their entries.
  virtual Result<> remove_rules() = 0;

  // Creates the v4 set (and the v6 set with `ipv6`) if missing. Also records
  // whether IPv6 entries are wanted at all (see add_pod_ip).
  virtual Result<> ensure_sets(bool ipv6) = 0;
  virtual Result<> flush_sets() = 0;  // empties the sets that exist
  // Idempotent. iptables: fails while rules still use the sets (remove the
  // rules first). nftables: sets are table-local, so the table goes, rules too.
  virtual Result<> destroy_sets() = 0;

  // Adds (or re-owns) `ip` with comment `pod_uid`, creating its set if
  // missing. An IPv6 address while the sets are v4-only is skipped with a
  // debug log, not an error (docs/redirection.md#probe-sets). Bad UIDs:
  // InvalidArgument.
  virtual Result<> add_pod_ip(const IpAddress& ip, const std::string& pod_uid) = 0;
  // Deletes `ip` only if its comment is `pod_uid`. Absent: success. Owned by
  // another UID (the IP was reused by a newer pod): kept, success, warning.
  virtual Result<> remove_pod_ip(const IpAddress& ip, const std::string& pod_uid) = 0;
  // All entries of both sets (absent sets list as empty).
  virtual Result<std::vector<ProbeSetEntry>> list_sets() = 0;
};

// iptables-restore input for the host rules of one IP family
// (docs/redirection.md#host-probe-snat). With ProbeMatch::SocketExists it is
// exactly upstream's golden; with KubeletUid `-m owner --uid-owner <uid>`
// replaces `-m owner --socket-exists`.
std::string host_iptables_restore_text(const HostProbeConfig& cfg, IpFamily ip);

// The nft transaction for the host rules
// (docs/redirection.md#host-probe-snat), one command a line.
// With KubeletUid it is exactly upstream's golden (`skuid <uid>`); with
// SocketExists it matches any socket owner (`skuid >= 0`, which like
// `--socket-exists` needs a full local socket).
std::string host_nft_text(const HostProbeConfig& cfg);

// Pod UIDs become set comments and nft command text: only [A-Za-z0-9._-],
// 1..128 characters, is accepted (Kubernetes UIDs are UUIDs).
Result<> validate_pod_uid(const std::string& pod_uid);

// What add_pod_ip stores for `ip` (v4-mapped v6 unmapped), after checking
// the UID; nullopt for an IPv6 address while IPv6 is off (nothing to add).
Result<std::optional<IpAddress>> probe_set_address(const IpAddress& ip, const std::string& pod_uid,
                                                   bool ipv6_on);

}  // namespace ambient::redirect
