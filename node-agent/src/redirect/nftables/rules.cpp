#include "redirect/nftables/rules.h"

#include <algorithm>
#include <set>

namespace ambient::redirect {

namespace {
constexpr const char* kNat = "istio-ambient-nat";
constexpr const char* kMangle = "istio-ambient-mangle";
constexpr const char* kRaw = "istio-ambient-raw";

std::string base_chains(const std::string& table) {
  const std::string p = "add chain inet " + table + " ";
  if (table == kNat) {
    return p + "prerouting { type nat hook prerouting priority -100 ; }\n" + p +
           "output { type nat hook output priority -100 ; }\n";
  }
  if (table == kMangle) {
    return p + "prerouting { type filter hook prerouting priority -150 ; }\n" + p +
           "output { type route hook output priority -150 ; }\n";
  }
  return p + "prerouting { type filter hook prerouting priority -300 ; }\n" + p +
         "output { type filter hook output priority -300 ; }\n";
}
}  // namespace

std::vector<NftRule> inpod_nft_rules(const PodRedirectConfig& cfg) {
  std::vector<NftRule> r;
  auto add = [&](const char* table, const char* chain, std::string body) {
    r.push_back({table, chain, std::move(body)});
  };
  const std::string mark_ne = "mark and 0xfff != 0x539";
  const std::string v6snat = cfg.probe_snat_ipv6;
  // Same order and conditions as the iptables list
  // (docs/redirection.md#iptables-rules).
  add(kMangle, "prerouting", "jump istio-prerouting");
  add(kMangle, "output", "jump istio-output");
  add(kNat, "output", "jump istio-output");
  if (cfg.dns_capture) {
    add(kRaw, "prerouting", "jump istio-prerouting");
    add(kRaw, "output", "jump istio-output");
  }
  add(kNat, "prerouting", "jump istio-prerouting");
  for (const auto& vif : cfg.virtual_interfaces) {
    add(kNat, "istio-prerouting",
        "iifname " + vif + " meta l4proto tcp counter redirect to :15001");
    add(kNat, "istio-prerouting", "iifname " + vif + " meta l4proto tcp counter return");
  }
  // Two spaces after '|' as upstream renders it.
  add(kMangle, "istio-prerouting",
      "meta mark & 0xfff == 0x539 counter ct mark set ct mark & 0xfffff000 |  0x111");
  if (!cfg.ingress_mode) {
    add(kNat, "istio-prerouting",
        "meta l4proto tcp ip saddr " + cfg.probe_snat_ipv4 + " counter accept");
    if (cfg.ipv6)
      add(kNat, "istio-prerouting", "meta l4proto tcp ip6 saddr " + v6snat + " counter accept");
  }
  add(kNat, "istio-output", "meta l4proto tcp ip daddr " + cfg.probe_snat_ipv4 + " counter accept");
  if (cfg.ipv6)
    add(kNat, "istio-output", "meta l4proto tcp ip6 daddr " + v6snat + " counter accept");
  if (!cfg.ingress_mode) {
    // v4 has two spaces before != (upstream's rendering), v6 one.
    add(kNat, "istio-prerouting",
        "ip daddr != 127.0.0.1/32 tcp dport != 15008 mark and 0xfff  != 0x539 counter redirect to "
        ":15006");
    if (cfg.ipv6) {
      add(kNat, "istio-prerouting",
          "ip6 daddr != ::1/128 tcp dport != 15008 " + mark_ne + " counter redirect to :15006");
    }
  }
  add(kMangle, "istio-output", "ct mark and 0xfff == 0x111 counter meta mark set ct mark");
  if (cfg.dns_capture) {
    add(kNat, "istio-output",
        "oifname != lo " + mark_ne + " udp dport 53 counter redirect to :15053");
    add(kNat, "istio-output",
        "ip daddr != 127.0.0.1/32 tcp dport 53 " + mark_ne + " counter redirect to :15053");
    if (cfg.ipv6) {
      add(kNat, "istio-output",
          "ip6 daddr != ::1/128 tcp dport 53 " + mark_ne + " counter redirect to :15053");
    }
    add(kRaw, "istio-output", "udp dport 53 meta mark and 0xfff == 0x539 counter ct zone set 1");
    add(kRaw, "istio-prerouting",
        "udp sport 53 meta mark and 0xfff != 0x539 counter ct zone set 1");
  }
  add(kNat, "istio-output", "meta l4proto tcp mark and 0xfff == 0x111 counter accept");
  add(kNat, "istio-output", "oifname lo ip daddr != 127.0.0.1/32 counter accept");
  if (cfg.ipv6) add(kNat, "istio-output", "oifname lo ip6 daddr != ::1/128 counter accept");
  add(kNat, "istio-output",
      "meta l4proto tcp ip daddr != 127.0.0.1/32 " + mark_ne + " counter redirect to :15001");
  if (cfg.ipv6) {
    add(kNat, "istio-output",
        "meta l4proto tcp ip6 daddr != ::1/128 " + mark_ne + " counter redirect to :15001");
  }
  return r;
}

std::string inpod_nft_text(const PodRedirectConfig& cfg) {
  const auto rules = inpod_nft_rules(cfg);
  std::string out;
  for (const char* table : kNftTables) {
    bool used =
        std::any_of(rules.begin(), rules.end(), [&](const NftRule& r) { return r.table == table; });
    if (!used) continue;
    const std::string t = table;
    out += "add table inet " + t + "\n";
    out += "flush table inet " + t + "\n";
    out += base_chains(t);
    out += "add chain inet " + t + " istio-prerouting\n";
    out += "add chain inet " + t + " istio-output\n";
    for (const auto& r : rules) {
      if (r.table == table) out += "add rule inet " + t + " " + r.chain + " " + r.body + "\n";
    }
  }
  return out;
}

std::string inpod_nft_apply_text(const PodRedirectConfig& cfg) {
  const auto rules = inpod_nft_rules(cfg);
  std::string out = inpod_nft_text(cfg);
  for (const char* table : kNftTables) {
    bool used =
        std::any_of(rules.begin(), rules.end(), [&](const NftRule& r) { return r.table == table; });
    if (used) continue;
    out += std::string("add table inet ") + table + "\ndelete table inet " + table + "\n";
  }
  return out;
}

std::string inpod_nft_delete_text() {
  std::string out;
  for (const char* table : kNftTables) {
    out += std::string("add table inet ") + table + "\ndelete table inet " + table + "\n";
  }
  return out;
}

}  // namespace ambient::redirect
