#include "redirect/iptables/rules.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

namespace ambient::redirect {

namespace {

bool is_builtin(const std::string& c) {
  static const std::set<std::string> kBuiltin = {"INPUT",       "OUTPUT", "FORWARD", "PREROUTING",
                                                 "POSTROUTING", "ACCEPT", "RETURN",  "DROP"};
  return kBuiltin.count(c) > 0;
}

std::string hex(unsigned v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

}  // namespace

std::vector<IptRule> inpod_rules(const PodRedirectConfig& cfg, IpFamily ip) {
  const std::string mark = hex(kZtunnelMark) + "/" + hex(kInpodMask);  // 0x539/0xfff
  const std::string inpod = hex(kInpodMark) + "/" + hex(kInpodMask);   // 0x111/0xfff
  const std::string loopback = ip == IpFamily::V6 ? "::1/128" : "127.0.0.1/32";
  const std::string snat = ip == IpFamily::V6 ? cfg.probe_snat_ipv6 : cfg.probe_snat_ipv4;
  const std::string out_port = std::to_string(kOutboundPort);
  const std::string in_port = std::to_string(kInboundPlaintextPort);
  const std::string dns_port = std::to_string(kDnsPort);

  std::vector<IptRule> r;
  auto add = [&](std::string table, std::string chain, std::vector<std::string> params) {
    r.push_back({std::move(table), "-A", std::move(chain), std::move(params)});
  };
  // Hooks from the builtin chains.
  add("mangle", "PREROUTING", {"-j", "ISTIO_PRERT"});
  add("mangle", "OUTPUT", {"-j", "ISTIO_OUTPUT"});
  add("nat", "OUTPUT", {"-j", "ISTIO_OUTPUT"});
  if (cfg.dns_capture) {
    add("raw", "PREROUTING", {"-j", "ISTIO_PRERT"});
    add("raw", "OUTPUT", {"-j", "ISTIO_OUTPUT"});
  }
  add("nat", "PREROUTING", {"-j", "ISTIO_PRERT"});
  // TCP arriving on a virtual interface is the workload's own egress.
  for (const auto& vif : cfg.virtual_interfaces) {
    add("nat", "ISTIO_PRERT", {"-i", vif, "-p", "tcp", "-j", "REDIRECT", "--to-ports", out_port});
    add("nat", "ISTIO_PRERT", {"-i", vif, "-p", "tcp", "-j", "RETURN"});
  }
  // ztunnel's spoofed connections to the app: remember them in conntrack
  // so the app's replies can be routed back to ztunnel (table 100).
  add("mangle", "ISTIO_PRERT",
      {"-m", "mark", "--mark", mark, "-j", "CONNMARK", "--set-xmark", inpod});
  if (!cfg.ingress_mode) {
    // SNATed kubelet probes reach the app directly.
    add("nat", "ISTIO_PRERT", {"-s", snat, "-p", "tcp", "-m", "tcp", "-j", "ACCEPT"});
  }
  add("nat", "ISTIO_OUTPUT", {"-d", snat, "-p", "tcp", "-m", "tcp", "-j", "ACCEPT"});
  if (!cfg.ingress_mode) {
    // All inbound plaintext TCP to ztunnel, except HBONE (15008), loopback
    // and ztunnel's own packets.
    add("nat", "ISTIO_PRERT",
        {"!", "-d", loopback, "-p", "tcp", "!", "--dport", std::to_string(kInboundHbonePort), "-m",
         "mark", "!", "--mark", mark, "-j", "REDIRECT", "--to-ports", in_port});
  }
  add("mangle", "ISTIO_OUTPUT",
      {"-m", "connmark", "--mark", inpod, "-j", "CONNMARK", "--restore-mark", "--nfmask",
       "0xffffffff", "--ctmask", "0xffffffff"});
  if (cfg.dns_capture) {
    // Upstream writes --to-port (singular) here; it is kept for byte equality.
    add("nat", "ISTIO_OUTPUT",
        {"!", "-o", "lo", "-p", "udp", "-m", "mark", "!", "--mark", mark, "-m", "udp", "--dport",
         "53", "-j", "REDIRECT", "--to-port", dns_port});
    add("nat", "ISTIO_OUTPUT",
        {"!", "-d", loopback, "-p", "tcp", "--dport", "53", "-m", "mark", "!", "--mark", mark, "-j",
         "REDIRECT", "--to-ports", dns_port});
    // ztunnel's own DNS queries and the answers they get live in conntrack
    // zone 1, apart from the app's redirected flows.
    add("raw", "ISTIO_OUTPUT",
        {"-p", "udp", "-m", "mark", "--mark", mark, "-m", "udp", "--dport", "53", "-j", "CT",
         "--zone", "1"});
    add("raw", "ISTIO_PRERT",
        {"-p", "udp", "-m", "mark", "!", "--mark", mark, "-m", "udp", "--sport", "53", "-j", "CT",
         "--zone", "1"});
  }
  add("nat", "ISTIO_OUTPUT", {"-p", "tcp", "-m", "mark", "--mark", inpod, "-j", "ACCEPT"});
  add("nat", "ISTIO_OUTPUT", {"!", "-d", loopback, "-o", "lo", "-j", "ACCEPT"});
  add("nat", "ISTIO_OUTPUT",
      {"!", "-d", loopback, "-p", "tcp", "-m", "mark", "!", "--mark", mark, "-j", "REDIRECT",
       "--to-ports", out_port});
  return r;
}

std::string restore_text(const std::vector<IptRule>& rules) {
  std::map<std::string, std::vector<const IptRule*>> by_table;  // sorted table names
  for (const auto& r : rules) by_table[r.table].push_back(&r);
  std::string out;
  for (const auto& [table, trs] : by_table) {
    std::vector<std::string> declared;
    auto declare = [&](const std::string& c) {
      if (is_builtin(c) || std::find(declared.begin(), declared.end(), c) != declared.end()) return;
      declared.push_back(c);
    };
    for (const auto* r : trs) declare(r->chain);
    for (const auto* r : trs) {
      const auto& p = r->params;
      if (p.size() >= 2 && p[p.size() - 2] == "-j") declare(p.back());
    }
    out += "* " + table + "\n";
    for (const auto& c : declared) out += "-N " + c + "\n";
    for (const auto* r : trs) {
      out += r->verb + " " + r->chain;
      for (const auto& p : r->params) out += " " + p;
      out += "\n";
    }
    out += "COMMIT\n";
  }
  return out;
}

std::string removal_text(const std::string& save_output) {
  // table -> (jump lines to delete, our chains)
  std::map<std::string, std::pair<std::vector<std::string>, std::vector<std::string>>> plan;
  std::string table;
  std::istringstream in(save_output);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind('*', 0) == 0) {
      table = line.substr(1);
      table.erase(0, table.find_first_not_of(' '));
    } else if (line.rfind(":ISTIO_", 0) == 0) {
      plan[table].second.push_back(line.substr(1, line.find(' ') - 1));
    } else if (line.rfind("-A ", 0) == 0) {
      std::istringstream words(line);
      std::string verb, chain;
      words >> verb >> chain;
      bool to_ours = line.find(" -j ISTIO_") != std::string::npos ||
                     line.find(" -g ISTIO_") != std::string::npos;
      if (to_ours && chain.rfind("ISTIO_", 0) != 0) {
        plan[table].first.push_back("-D" + line.substr(2));
      }
    }
  }
  std::string out;
  for (const auto& [t, p] : plan) {
    if (p.first.empty() && p.second.empty()) continue;
    out += "*" + t + "\n";
    for (const auto& d : p.first) out += d + "\n";
    for (const auto& c : p.second) out += "-F " + c + "\n";
    for (const auto& c : p.second) out += "-X " + c + "\n";
    out += "COMMIT\n";
  }
  return out;
}

}  // namespace ambient::redirect
