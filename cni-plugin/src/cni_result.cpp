#include "cni_result.h"

#include <sys/socket.h>

#include <charconv>

namespace ambient::cni {

using json::Json;

const std::vector<std::string>& supported_versions() {
  static const std::vector<std::string> v = {"0.1.0", "0.2.0", "0.3.0", "0.3.1",
                                             "0.4.0", "1.0.0", "1.1.0"};
  return v;
}

bool is_supported_version(std::string_view v) {
  for (const auto& s : supported_versions()) {
    if (s == v) return true;
  }
  return false;
}

int compare_versions(std::string_view a, std::string_view b) {
  auto parts = [](std::string_view s) {
    std::vector<int> out;
    while (!s.empty()) {
      auto dot = s.find('.');
      auto part = s.substr(0, dot);
      int n = 0;
      std::from_chars(part.data(), part.data() + part.size(), n);
      out.push_back(n);
      if (dot == std::string_view::npos) break;
      s.remove_prefix(dot + 1);
    }
    out.resize(3);
    return out;
  };
  auto pa = parts(a), pb = parts(b);
  return pa < pb ? -1 : (pa == pb ? 0 : 1);
}

namespace {

bool is_020(std::string_view v) { return v == "0.1.0" || v == "0.2.0"; }
bool is_040(std::string_view v) { return v == "0.3.0" || v == "0.3.1" || v == "0.4.0"; }

Result<IpPrefix> read_prefix(const Json& obj, std::string_view key, const std::string& where,
                             bool required) {
  std::string text;
  AMBIENT_RETURN_IF_ERROR(json::read(obj, key, text, where));
  if (text.empty()) {
    if (required) {
      return make_error(Errc::InvalidArgument, where + ": missing \"" + std::string(key) + "\"");
    }
    return IpPrefix{};
  }
  auto p = IpPrefix::parse(text);
  if (!p) return std::move(p).error().context(where + "." + std::string(key));
  return p;
}

Result<std::optional<IpAddress>> read_ip(const Json& obj, std::string_view key,
                                         const std::string& where) {
  std::string text;
  AMBIENT_RETURN_IF_ERROR(json::read(obj, key, text, where));
  if (text.empty()) return std::optional<IpAddress>{};
  auto ip = IpAddress::parse(text);
  if (!ip) return std::move(ip).error().context(where + "." + std::string(key));
  return std::optional<IpAddress>(*ip);
}

Result<Route> parse_route(const Json& j, const std::string& where) {
  if (!j.is_object()) return json::type_error(where, "an object", j, "result");
  Route r;
  AMBIENT_ASSIGN_OR_RETURN(r.dst, read_prefix(j, "dst", where, true));
  AMBIENT_ASSIGN_OR_RETURN(r.gw, read_ip(j, "gw", where));
  int64_t n = 0;
  AMBIENT_RETURN_IF_ERROR(json::read(j, "mtu", n, where));
  r.mtu = static_cast<int>(n);
  n = 0;
  AMBIENT_RETURN_IF_ERROR(json::read(j, "advmss", n, where));
  r.advmss = static_cast<int>(n);
  n = 0;
  AMBIENT_RETURN_IF_ERROR(json::read(j, "priority", n, where));
  r.priority = static_cast<int>(n);
  std::optional<int64_t> opt;
  AMBIENT_RETURN_IF_ERROR(json::read(j, "table", opt, where));
  if (opt) r.table = static_cast<int>(*opt);
  opt.reset();
  AMBIENT_RETURN_IF_ERROR(json::read(j, "scope", opt, where));
  if (opt) r.scope = static_cast<int>(*opt);
  return r;
}

Result<std::vector<Route>> parse_routes(const Json& j, std::string_view key,
                                        const std::string& where) {
  std::vector<Route> out;
  const Json* arr = json::find(j, key);
  if (!arr) return out;
  if (!arr->is_array()) return json::type_error(key, "an array", *arr, where);
  for (size_t i = 0; i < arr->size(); ++i) {
    AMBIENT_ASSIGN_OR_RETURN(Route r,
                             parse_route((*arr)[i], where + ".routes[" + std::to_string(i) + "]"));
    out.push_back(std::move(r));
  }
  return out;
}

Result<Dns> parse_dns(const Json& j) {
  Dns d;
  const Json* dns = json::find(j, "dns");
  if (!dns) return d;
  if (!dns->is_object()) return json::type_error("dns", "an object", *dns, "result");
  AMBIENT_RETURN_IF_ERROR(json::read(*dns, "nameservers", d.nameservers, "result.dns"));
  AMBIENT_RETURN_IF_ERROR(json::read(*dns, "domain", d.domain, "result.dns"));
  AMBIENT_RETURN_IF_ERROR(json::read(*dns, "search", d.search, "result.dns"));
  AMBIENT_RETURN_IF_ERROR(json::read(*dns, "options", d.options, "result.dns"));
  return d;
}

// 0.1.0 / 0.2.0: {"ip4": {"ip", "gateway", "routes"}, "ip6": {...}, "dns"}.
Result<CniResult> parse_020(const Json& j) {
  CniResult r;
  for (const char* key : {"ip4", "ip6"}) {
    const Json* ipc = json::find(j, key);
    if (!ipc) continue;
    std::string where = std::string("result.") + key;
    if (!ipc->is_object()) return json::type_error(key, "an object", *ipc, "result");
    IpConfig c;
    AMBIENT_ASSIGN_OR_RETURN(c.address, read_prefix(*ipc, "ip", where, true));
    AMBIENT_ASSIGN_OR_RETURN(c.gateway, read_ip(*ipc, "gateway", where));
    r.ips.push_back(c);
    AMBIENT_ASSIGN_OR_RETURN(auto routes, parse_routes(*ipc, "routes", where));
    for (auto& rt : routes) r.routes.push_back(std::move(rt));
  }
  AMBIENT_ASSIGN_OR_RETURN(r.dns, parse_dns(j));
  return r;
}

Result<CniResult> parse_current(const Json& j, bool v040) {
  CniResult r;
  if (const Json* ifs = json::find(j, "interfaces")) {
    if (!ifs->is_array()) return json::type_error("interfaces", "an array", *ifs, "result");
    for (size_t i = 0; i < ifs->size(); ++i) {
      const Json& e = (*ifs)[i];
      std::string where = "result.interfaces[" + std::to_string(i) + "]";
      if (!e.is_object()) return json::type_error(where, "an object", e, "result");
      Interface itf;
      AMBIENT_RETURN_IF_ERROR(json::read(e, "name", itf.name, where));
      AMBIENT_RETURN_IF_ERROR(json::read(e, "mac", itf.mac, where));
      AMBIENT_RETURN_IF_ERROR(json::read(e, "sandbox", itf.sandbox, where));
      if (!v040) {  // 0.x interfaces have no mtu/socketPath/pciID
        int64_t mtu = 0;
        AMBIENT_RETURN_IF_ERROR(json::read(e, "mtu", mtu, where));
        itf.mtu = static_cast<int>(mtu);
        AMBIENT_RETURN_IF_ERROR(json::read(e, "socketPath", itf.socket_path, where));
        AMBIENT_RETURN_IF_ERROR(json::read(e, "pciID", itf.pci_id, where));
      }
      r.interfaces.push_back(std::move(itf));
    }
  }
  if (const Json* ips = json::find(j, "ips")) {
    if (!ips->is_array()) return json::type_error("ips", "an array", *ips, "result");
    for (size_t i = 0; i < ips->size(); ++i) {
      const Json& e = (*ips)[i];
      std::string where = "result.ips[" + std::to_string(i) + "]";
      if (!e.is_object()) return json::type_error(where, "an object", e, "result");
      IpConfig c;
      std::optional<int64_t> iface;
      AMBIENT_RETURN_IF_ERROR(json::read(e, "interface", iface, where));
      if (iface) c.interface = static_cast<int>(*iface);
      AMBIENT_ASSIGN_OR_RETURN(c.address, read_prefix(e, "address", where, true));
      AMBIENT_ASSIGN_OR_RETURN(c.gateway, read_ip(e, "gateway", where));
      if (v040) {
        std::string version;  // informational; recomputed from the address on output
        AMBIENT_RETURN_IF_ERROR(json::read(e, "version", version, where));
      }
      r.ips.push_back(std::move(c));
    }
  }
  AMBIENT_ASSIGN_OR_RETURN(r.routes, parse_routes(j, "routes", "result"));
  AMBIENT_ASSIGN_OR_RETURN(r.dns, parse_dns(j));
  return r;
}

Json render_route(const Route& r, bool full) {
  Json j = Json::object();
  j["dst"] = r.dst.to_string();
  if (r.gw) j["gw"] = r.gw->to_string();
  if (full) {
    if (r.mtu) j["mtu"] = r.mtu;
    if (r.advmss) j["advmss"] = r.advmss;
    if (r.priority) j["priority"] = r.priority;
    if (r.table) j["table"] = *r.table;
    if (r.scope) j["scope"] = *r.scope;
  }
  return j;
}

Json render_dns(const Dns& d) {
  Json j = Json::object();
  if (!d.nameservers.empty()) j["nameservers"] = d.nameservers;
  if (!d.domain.empty()) j["domain"] = d.domain;
  if (!d.search.empty()) j["search"] = d.search;
  if (!d.options.empty()) j["options"] = d.options;
  return j;
}

}  // namespace

Result<CniResult> parse_result(const Json& doc, std::string_view version) {
  if (!doc.is_object()) return json::type_error("prevResult", "an object", doc, "result");
  if (is_020(version)) return parse_020(doc);
  return parse_current(doc, is_040(version));
}

Result<Json> render_result(const CniResult& r, std::string_view version) {
  Json j = Json::object();
  j["cniVersion"] = std::string(version);
  if (is_020(version)) {
    std::optional<Json> ip4, ip6;
    for (const auto& ip : r.ips) {
      auto& slot = ip.address.address.family == AF_INET ? ip4 : ip6;
      if (slot) continue;  // 0.2.0 holds one address per family: the first
      Json c = Json::object();
      c["ip"] = ip.address.to_string();
      if (ip.gateway) c["gateway"] = ip.gateway->to_string();
      slot = std::move(c);
    }
    if (!ip4 && !ip6) return make_error(Errc::Internal, "cannot convert: no valid IP addresses");
    for (const auto& rt : r.routes) {
      auto& slot = rt.dst.address.family == AF_INET ? ip4 : ip6;
      if (!slot) continue;
      if (!slot->contains("routes")) (*slot)["routes"] = Json::array();
      (*slot)["routes"].push_back(render_route(rt, true));
    }
    if (ip4) j["ip4"] = *ip4;
    if (ip6) j["ip6"] = *ip6;
    j["dns"] = render_dns(r.dns);
    return j;
  }
  bool v040 = is_040(version);
  if (!r.interfaces.empty()) {
    Json arr = Json::array();
    for (const auto& i : r.interfaces) {
      Json e = Json::object();
      e["name"] = i.name;
      if (!i.mac.empty()) e["mac"] = i.mac;
      if (!v040 && i.mtu) e["mtu"] = i.mtu;
      if (!i.sandbox.empty()) e["sandbox"] = i.sandbox;
      if (!v040 && !i.socket_path.empty()) e["socketPath"] = i.socket_path;
      if (!v040 && !i.pci_id.empty()) e["pciID"] = i.pci_id;
      arr.push_back(std::move(e));
    }
    j["interfaces"] = std::move(arr);
  }
  if (!r.ips.empty()) {
    Json arr = Json::array();
    for (const auto& ip : r.ips) {
      Json e = Json::object();
      if (v040) e["version"] = ip.address.address.family == AF_INET ? "4" : "6";
      if (ip.interface) e["interface"] = *ip.interface;
      e["address"] = ip.address.to_string();
      if (ip.gateway) e["gateway"] = ip.gateway->to_string();
      arr.push_back(std::move(e));
    }
    j["ips"] = std::move(arr);
  }
  if (!r.routes.empty()) {
    Json arr = Json::array();
    for (const auto& rt : r.routes) arr.push_back(render_route(rt, true));
    j["routes"] = std::move(arr);
  }
  // Go prints 0.x's DNS struct even when empty; 1.x omits it when empty.
  if (v040 || !r.dns.empty()) j["dns"] = render_dns(r.dns);
  return j;
}

std::string print_json(const Json& j) { return j.dump(4) + "\n"; }

}  // namespace ambient::cni
