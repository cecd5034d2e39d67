// CNI results and version conversion (containernetworking/cni v1.3.0
// semantics). The plugin never changes the networking result: it parses
// prevResult as the configuration's version, converts it to the current
// type, and prints it back in the configuration's version.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/ip_address.h"
#include "lib/json_fields.h"
#include "lib/result.h"

namespace ambient::cni {

inline constexpr std::string_view kCurrentVersion = "1.1.0";
const std::vector<std::string>& supported_versions();
bool is_supported_version(std::string_view v);
// Semver-style comparison of two supported version strings.
int compare_versions(std::string_view a, std::string_view b);

struct Interface {
  std::string name, mac, sandbox, socket_path, pci_id;
  int mtu = 0;
};

struct IpConfig {
  std::optional<int> interface;
  IpPrefix address;
  std::optional<IpAddress> gateway;
};

struct Route {
  IpPrefix dst;
  std::optional<IpAddress> gw;
  int mtu = 0, advmss = 0, priority = 0;
  std::optional<int> table, scope;
};

struct Dns {
  std::vector<std::string> nameservers, search, options;
  std::string domain;
  bool empty() const {
    return nameservers.empty() && search.empty() && options.empty() && domain.empty();
  }
};

// The current (1.1.0) result type.
struct CniResult {
  std::vector<Interface> interfaces;
  std::vector<IpConfig> ips;
  std::vector<Route> routes;
  Dns dns;
};

// Parses `doc` as a result of CNI version `version`.
Result<CniResult> parse_result(const json::Json& doc, std::string_view version);
// Renders `r` as a result of `version` (e.g. 0.2.0 uses ip4/ip6); fails for
// 0.1.0/0.2.0 without addresses ("cannot convert: no valid IP addresses").
Result<json::Json> render_result(const CniResult& r, std::string_view version);
// Upstream's printer: 4-space indent, trailing newline.
std::string print_json(const json::Json& j);

}  // namespace ambient::cni
