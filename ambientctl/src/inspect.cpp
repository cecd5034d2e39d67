#include "inspect.h"

#include <fstream>
#include <sstream>
#include <vector>

#include "netns/netns.h"
#include "netns/sock_diag.h"
#include "process/process.h"
#include "redirect/ebpf/programs.h"
#include "redirect/ebpf/tc.h"

namespace ambient::ctl {

using nlohmann::json;

namespace {

// The sysctls the in-pod redirection relies on (docs/redirection.md).
const char* const kSysctls[] = {"net/ipv4/conf/all/rp_filter",
                                "net/ipv4/conf/default/rp_filter",
                                "net/ipv4/conf/lo/rp_filter",
                                "net/ipv4/conf/all/route_localnet",
                                "net/ipv4/ip_forward",
                                "net/ipv6/conf/all/disable_ipv6",
                                "net/ipv4/conf/all/src_valid_mark"};

// A read-only command inside the netns (the calling thread's): its
// output, or "" when the tool is missing or finds nothing.
std::string read_command(std::vector<std::string> argv, std::string* error) {
  auto r = run_command({.argv = std::move(argv), .timeout = std::chrono::seconds(10)});
  if (!r) {
    *error = r.error().describe();
    return "";
  }
  if (r->exit_code != 0) {
    *error = r->err.empty() ? "exit " + std::to_string(r->exit_code) : r->err;
    while (!error->empty() && error->back() == '\n') error->pop_back();
    return "";
  }
  return r->out;
}

std::string read_sysctl(const std::string& name) {
  std::ifstream f("/proc/sys/" + name);
  std::string v;
  if (!f || !std::getline(f, v)) return "";
  return v;
}

// The parts of an iptables-save dump that are ours: the tables holding an
// ISTIO_ chain, whole (jumps from the built-in chains included).
std::string our_iptables(const std::string& dump) {
  std::string out, table;
  bool ours = false;
  std::istringstream in(dump);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind('*', 0) == 0) {
      table = line + "\n";
      ours = false;
      continue;
    }
    if (line.rfind('#', 0) == 0) continue;
    table += line + "\n";
    if (line.find("ISTIO_") != std::string::npos) ours = true;
    if (line == "COMMIT") {
      if (ours) out += table;
      table.clear();
    }
  }
  return out;
}

// The per-decision counters behind the first filter of ours found in the
// calling thread's netns: every pod of one agent shares them. Empty when
// there is none (no eBPF redirection here).
Result<json> ebpf_counters_here() {
  namespace ebpf = redirect::ebpf;
  AMBIENT_ASSIGN_OR_RETURN(auto interfaces, ebpf::list_interfaces());
  for (const auto& itf : interfaces) {
    for (ebpf::Hook hook : {ebpf::Hook::Egress, ebpf::Hook::Ingress}) {
      AMBIENT_ASSIGN_OR_RETURN(uint32_t id, ebpf::attached_program(itf, hook));
      if (id == 0) continue;
      if (ebpf::program_name_by_id(id).rfind(ebpf::kProgramNamePrefix, 0) != 0) continue;
      AMBIENT_ASSIGN_OR_RETURN(ebpf::Counters c, ebpf::counters_of_program(id));
      json out = json::object();
      for (size_t i = 0; i < c.size(); ++i) {
        out[std::string(ebpf::counter_name(static_cast<amb_counter>(i)))] = c[i];
      }
      return out;
    }
  }
  return json::object();
}

void add_section(std::string& out, const std::string& title, const std::string& body) {
  out += "== " + title + " ==\n" + (body.empty() ? "(none)\n" : body);
  if (!body.empty() && body.back() != '\n') out += "\n";
  out += "\n";
}

}  // namespace

Result<json> inspect_json(const std::string& netns_path) {
  AMBIENT_ASSIGN_OR_RETURN(auto ns, netns::Netns::open(netns_path));
  json j;
  j["netns"] = netns_path;
  j["netns_inode"] = static_cast<uint64_t>(ns.inode());
  json errors = json::object();
  std::vector<netns::ListeningSocket> socks;
  AMBIENT_RETURN_IF_ERROR(
      netns::run_in_netns(ns, [&]() -> Result<> {
        // Each reading is independent: one that fails is noted, the rest shown.
        auto read = [&](const char* key, std::vector<std::string> argv) {
          std::string e;
          std::string text = read_command(std::move(argv), &e);
          if (!e.empty()) errors[key] = e;
          return text;
        };
        j["nftables"] = read("nftables", {"nft", "list", "ruleset"});
        j["iptables_legacy"] = our_iptables(read("iptables_legacy", {"iptables-legacy-save"}));
        j["iptables_nft"] = our_iptables(read("iptables_nft", {"iptables-nft-save"}));
        j["ip6tables_legacy"] = our_iptables(read("ip6tables_legacy", {"ip6tables-legacy-save"}));
        j["ip6tables_nft"] = our_iptables(read("ip6tables_nft", {"ip6tables-nft-save"}));
        j["bpf"] = read("bpf", {"bpftool", "net", "show"});
        if (auto counters = ebpf_counters_here()) {
          if (!counters->empty()) j["ebpf_counters"] = std::move(*counters);
        } else {
          errors["ebpf_counters"] = counters.error().describe();
        }
        j["ip_rules"] = read("ip_rules", {"ip", "rule", "show"});
        j["ip6_rules"] = read("ip6_rules", {"ip", "-6", "rule", "show"});
        j["route_table_100"] = read("route_table_100", {"ip", "route", "show", "table", "100"});
        j["route6_table_100"] =
            read("route6_table_100", {"ip", "-6", "route", "show", "table", "100"});
        json sysctls = json::object();
        for (const char* s : kSysctls) sysctls[s] = read_sysctl(s);
        j["sysctls"] = std::move(sysctls);
        AMBIENT_ASSIGN_OR_RETURN(socks, netns::listening_sockets_here());
        return {};
      }).context("inspect " + netns_path));
  json sj = json::array();
  for (const auto& s : socks) {
    sj.push_back({{"proto", s.proto},
                  {"address", s.address},
                  {"port", s.port},
                  {"inode", s.inode},
                  {"mark", s.mark}});
  }
  j["sockets"] = std::move(sj);
  j["ztunnel_listeners_missing"] = netns::missing_ztunnel_listeners(socks, true);
  j["errors"] = std::move(errors);
  return j;
}

std::string inspect_table(const json& j) {
  std::string out = "Netns: " + j.value("netns", "") + " (inode " +
                    std::to_string(j.value("netns_inode", uint64_t{0})) + ")\n\n";
  add_section(out, "nftables", j.value("nftables", ""));
  add_section(out, "iptables (legacy)", j.value("iptables_legacy", ""));
  add_section(out, "iptables (nft)", j.value("iptables_nft", ""));
  add_section(out, "ip6tables (legacy)", j.value("ip6tables_legacy", ""));
  add_section(out, "ip6tables (nft)", j.value("ip6tables_nft", ""));
  add_section(out, "BPF programs (tc, xdp)", j.value("bpf", ""));
  std::string counters;
  if (auto it = j.find("ebpf_counters"); it != j.end() && it->is_object()) {
    for (const auto& [name, value] : it->items()) counters += name + " " + value.dump() + "\n";
  }
  add_section(out, "eBPF decision counters (shared by every pod of the agent)", counters);
  add_section(out, "ip rules", j.value("ip_rules", ""));
  add_section(out, "ip -6 rules", j.value("ip6_rules", ""));
  add_section(out, "route table 100", j.value("route_table_100", ""));
  add_section(out, "route table 100 (ipv6)", j.value("route6_table_100", ""));
  std::vector<std::vector<std::string>> rows;
  for (const auto& [k, v] : j["sysctls"].items()) {
    rows.push_back({k, v.get<std::string>().empty() ? "-" : v.get<std::string>()});
  }
  add_section(out, "sysctls", align(rows));
  std::vector<std::vector<std::string>> socks = {{"PROTO", "ADDRESS", "PORT", "MARK"}};
  for (const auto& s : j["sockets"]) {
    socks.push_back({s["proto"].get<std::string>(), s["address"].get<std::string>(),
                     std::to_string(s["port"].get<int>()),
                     std::to_string(s["mark"].get<uint32_t>())});
  }
  add_section(out, "listening sockets", socks.size() > 1 ? align(socks) : "");
  std::string missing;
  for (const auto& m : j["ztunnel_listeners_missing"]) missing += m.get<std::string>() + " ";
  out += "ztunnel listeners: " +
         (missing.empty() ? std::string("all present (15001, 15006, 15008, 15053)")
                          : "missing " + missing) +
         "\n";
  for (const auto& [k, v] : j["errors"].items()) {
    out += "note: " + k + " not read: " + v.get<std::string>() + "\n";
  }
  return out;
}

int inspect_netns(const std::string& netns_path, Format f, std::ostream& out, std::ostream& err) {
  auto j = inspect_json(netns_path);
  if (!j) {
    err << "ambientctl: " << j.error().describe() << "\n";
    return 2;
  }
  if (f == Format::Table) {
    out << inspect_table(*j);
  } else if (f == Format::Json) {
    out << j->dump(2) << "\n";
  } else {
    out << to_yaml(*j);
  }
  return 0;
}

}  // namespace ambient::ctl
