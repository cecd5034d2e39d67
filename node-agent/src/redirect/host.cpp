#include "redirect/host.h"

#include "log/log.h"

#include "redirect/iptables/rules.h"

namespace ambient::redirect {

std::string host_iptables_restore_text(const HostProbeConfig& cfg, IpFamily ip) {
  const std::string chain(kHostChain);
  std::vector<std::string> owner = {"-m", "owner"};
  if (cfg.match == ProbeMatch::SocketExists) {
    owner.emplace_back("--socket-exists");
  } else {
    owner.insert(owner.end(), {"--uid-owner", std::to_string(cfg.kubelet_uid)});
  }
  std::vector<std::string> snat = owner;
  snat.insert(snat.end(),
              {"-p", "tcp", "-m", "set", "--match-set", std::string(probe_set_name(ip)), "dst",
               "-j", "SNAT", "--to-source", ip == IpFamily::V6 ? cfg.snat_v6 : cfg.snat_v4});
  return restore_text({
      {.table = "nat", .verb = "-I", .chain = "POSTROUTING", .params = {"1", "-j", chain}},
      {.table = "nat", .verb = "-A", .chain = chain, .params = snat},
  });
}

std::string host_nft_text(const HostProbeConfig& cfg) {
  const std::string table = "inet " + std::string(kHostNftTable);
  const std::string owner = cfg.match == ProbeMatch::SocketExists
                                ? "skuid >= 0"
                                : "skuid " + std::to_string(cfg.kubelet_uid);
  std::string out;
  out += "add table " + table + "\n";
  // Flushes the chains' rules only: the sets and their entries survive
  // (checked by the integration test; upstream relies on it too).
  out += "flush table " + table + "\n";
  out += "add chain " + table + " postrouting { type nat hook postrouting priority 100 ; }\n";
  const std::string rule = "add rule " + table + " postrouting meta l4proto tcp " + owner;
  out += rule + " ip daddr @" + std::string(kProbeSetV4) + " counter snat to " + cfg.snat_v4 + "\n";
  if (cfg.ipv6) {
    out +=
        rule + " ip6 daddr @" + std::string(kProbeSetV6) + " counter snat to " + cfg.snat_v6 + "\n";
  }
  return out;
}

Result<> validate_pod_uid(const std::string& pod_uid) {
  if (pod_uid.empty() || pod_uid.size() > 128) {
    return make_error(Errc::InvalidArgument, "pod UID must have 1 to 128 characters, got " +
                                                 std::to_string(pod_uid.size()));
  }
  for (char c : pod_uid) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) {
      return make_error(Errc::InvalidArgument,
                        "pod UID \"" + pod_uid + "\" has a character other than [A-Za-z0-9._-]");
    }
  }
  return {};
}

Result<std::optional<IpAddress>> probe_set_address(const IpAddress& ip, const std::string& pod_uid,
                                                   bool ipv6_on) {
  AMBIENT_RETURN_IF_ERROR(validate_pod_uid(pod_uid));
  const IpAddress addr = ip.unmapped();
  if (ip_family_of(addr) == IpFamily::V6 && !ipv6_on) {
    log::debug("probe set: IPv6 is off, not adding {} (pod {})", addr.to_string(), pod_uid);
    return std::optional<IpAddress>();
  }
  return std::optional<IpAddress>(addr);
}

}  // namespace ambient::redirect
