#include "lib/cni_event.h"

#include <sys/socket.h>

#include "lib/json_fields.h"

namespace ambient::cni {

using json::Json;

std::string encode_event(const CniEvent& e) {
  Json j = Json::object();
  j["Netns"] = e.netns;
  j["PodName"] = e.pod_name;
  j["PodNamespace"] = e.pod_namespace;
  if (e.ips.empty()) {
    j["IPs"] = nullptr;
  } else {
    Json ips = Json::array();
    for (const auto& ip : e.ips) {
      Json item = Json::object();
      item["Interface"] = ip.interface ? Json(*ip.interface) : Json(nullptr);
      item["Address"] = {{"IP", ip.address.address.to_string()},
                         {"Mask", base64_encode(ip.address.mask_bytes())}};
      item["Gateway"] = ip.gateway ? ip.gateway->to_string() : "";
      ips.push_back(std::move(item));
    }
    j["IPs"] = std::move(ips);
  }
  if (!e.pod_uid.empty()) j["PodUID"] = e.pod_uid;
  if (!e.container_id.empty()) j["ContainerID"] = e.container_id;
  if (!e.ifname.empty()) j["IfName"] = e.ifname;
  return j.dump();
}

namespace {

// Go's IPMask -> prefix length; -1 if not canonical (Go's Size() gives 0,0).
int mask_to_prefix(const std::string& mask) {
  int len = 0;
  bool zero_seen = false;
  for (unsigned char b : mask) {
    for (int bit = 7; bit >= 0; --bit) {
      bool set = (b >> bit) & 1;
      if (set && zero_seen) return -1;
      if (set)
        ++len;
      else
        zero_seen = true;
    }
  }
  return len;
}

Result<EventIp> decode_ip(const Json& item, size_t index) {
  std::string where = "IPs[" + std::to_string(index) + "]";
  if (!item.is_object()) return json::type_error(where, "an object", item, "cni event");
  EventIp out;
  std::optional<int64_t> iface;
  AMBIENT_RETURN_IF_ERROR(json::read(item, "Interface", iface, where));
  if (iface) out.interface = static_cast<int>(*iface);

  const Json* addr = json::find(item, "Address");
  if (addr) {
    if (!addr->is_object()) return json::type_error("Address", "an object", *addr, where);
    std::string ip_text, mask_text;
    AMBIENT_RETURN_IF_ERROR(json::read(*addr, "IP", ip_text, where + ".Address"));
    AMBIENT_RETURN_IF_ERROR(json::read(*addr, "Mask", mask_text, where + ".Address"));
    if (!ip_text.empty()) {
      auto ip = IpAddress::parse(ip_text);
      if (!ip) return std::move(ip).error().context(where + ".Address.IP");
      out.address.address = ip->unmapped();
      out.address.prefix_len = out.address.address.family == AF_INET ? 32 : 128;
      // The mask is informational; a mask we cannot read keeps the host prefix.
      if (auto raw = base64_decode(mask_text); raw && !raw->empty()) {
        std::string m = *raw;
        if (m.size() == 16 && out.address.address.family == AF_INET) m = m.substr(12);
        if (m.size() == out.address.address.size()) {
          if (int len = mask_to_prefix(m); len >= 0) out.address.prefix_len = len;
        }
      }
    }
  }
  std::string gw;
  AMBIENT_RETURN_IF_ERROR(json::read(item, "Gateway", gw, where));
  if (!gw.empty()) {
    auto g = IpAddress::parse(gw);
    if (!g) return std::move(g).error().context(where + ".Gateway");
    out.gateway = g->unmapped();
  }
  return out;
}

}  // namespace

Result<CniEvent> decode_event(std::string_view body) {
  if (body.empty()) return make_error(Errc::InvalidArgument, "empty request body");
  AMBIENT_ASSIGN_OR_RETURN(Json j, json::parse(body));
  if (!j.is_object()) {
    return make_error(Errc::InvalidArgument,
                      std::string("cni event must be a JSON object, got ") + json::type_name(j));
  }
  CniEvent e;
  constexpr std::string_view kWhere = "cni event";
  AMBIENT_RETURN_IF_ERROR(json::read(j, "Netns", e.netns, kWhere));
  AMBIENT_RETURN_IF_ERROR(json::read(j, "PodName", e.pod_name, kWhere));
  AMBIENT_RETURN_IF_ERROR(json::read(j, "PodNamespace", e.pod_namespace, kWhere));
  AMBIENT_RETURN_IF_ERROR(json::read(j, "PodUID", e.pod_uid, kWhere));
  AMBIENT_RETURN_IF_ERROR(json::read(j, "ContainerID", e.container_id, kWhere));
  AMBIENT_RETURN_IF_ERROR(json::read(j, "IfName", e.ifname, kWhere));
  if (const Json* ips = json::find(j, "IPs")) {
    if (!ips->is_array()) return json::type_error("IPs", "an array", *ips, kWhere);
    for (size_t i = 0; i < ips->size(); ++i) {
      AMBIENT_ASSIGN_OR_RETURN(EventIp ip, decode_ip((*ips)[i], i));
      if (ip.address.address.family != 0) e.ips.push_back(std::move(ip));
    }
  }
  return e;
}

}  // namespace ambient::cni
