#include "output.h"

#include <algorithm>
#include <cstdio>

namespace ambient::ctl {

namespace pb = google::protobuf;
using nlohmann::json;

namespace {

json field_value(const pb::Message& m, const pb::FieldDescriptor* f, int index) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f);
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f);
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f);
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f);
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f);
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f);
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f);
    case pb::FieldDescriptor::CPPTYPE_STRING:
      return rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return (rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f))->name();
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      return to_json(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
  }
  return nullptr;
}

bool plain_yaml_key(const std::string& k) {
  return !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

std::string yaml_scalar(const json& j) {
  if (j.is_string()) return j.dump();  // a JSON string is a YAML double-quoted one
  if (j.is_null()) return "null";
  return j.dump();
}

void yaml_into(const json& j, int indent, std::string& out);

// A value after "key:" or "-": scalars and empty containers on the same
// line, the rest on the following lines.
void yaml_after(const json& v, int indent, bool in_list, std::string& out) {
  if (v.is_object() && !v.empty()) {
    if (in_list) {
      // The first key goes on the dash's line, the rest align with it.
      std::string nested;
      yaml_into(v, indent + 2, nested);
      out += " " + nested.substr(static_cast<size_t>(indent) + 2);
    } else {
      out += "\n";
      yaml_into(v, indent + 2, out);
    }
  } else if (v.is_array() && !v.empty()) {
    out += "\n";
    yaml_into(v, in_list ? indent + 2 : indent, out);
  } else if (v.is_object()) {
    out += " {}\n";
  } else if (v.is_array()) {
    out += " []\n";
  } else {
    out += " " + yaml_scalar(v) + "\n";
  }
}

void yaml_into(const json& j, int indent, std::string& out) {
  const std::string pad(static_cast<size_t>(indent), ' ');
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      out += pad + (plain_yaml_key(k) ? k : json(k).dump()) + ":";
      yaml_after(v, indent, false, out);
    }
  } else if (j.is_array()) {
    for (const auto& v : j) {
      out += pad + "-";
      yaml_after(v, indent, true, out);
    }
  } else {
    out += pad + yaml_scalar(j) + "\n";
  }
}

std::string yes_no(bool b) { return b ? "yes" : "no"; }

std::string join(const google::protobuf::RepeatedPtrField<std::string>& items,
                 const std::string& sep) {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : sep) + i;
  return s;
}

std::string or_dash(const std::string& s) { return s.empty() ? "-" : s; }

std::string duration(int64_t secs) {
  std::string s;
  if (secs >= 86400) s += std::to_string(secs / 86400) + "d";
  if (secs >= 3600) s += std::to_string(secs / 3600 % 24) + "h";
  if (secs >= 60) s += std::to_string(secs / 60 % 60) + "m";
  return s + std::to_string(secs % 60) + "s";
}

std::string ms(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f ms", v);
  return buf;
}

}  // namespace

json to_json(const pb::Message& m) {
  json j = json::object();
  const pb::Descriptor* d = m.GetDescriptor();
  const pb::Reflection* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) {
      json arr = json::array();
      for (int k = 0; k < r->FieldSize(m, f); ++k) arr.push_back(field_value(m, f, k));
      j[f->name()] = std::move(arr);
    } else {
      j[f->name()] = field_value(m, f, -1);
    }
  }
  return j;
}

std::string to_yaml(const json& j) {
  std::string out;
  yaml_into(j, 0, out);
  return out;
}

std::string render_data(const pb::Message& m, Format f) {
  json j = to_json(m);
  return f == Format::Yaml ? to_yaml(j) : j.dump(2) + "\n";
}

std::string align(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::string status_table(const admin::v1::Status& s) {
  const auto& c = s.pods();
  std::string ztunnel = std::to_string(s.ztunnel_connections()) +
                        (s.ztunnel_connections() == 1 ? " connection" : " connections") + ", " +
                        (s.zds_accepting() ? "accepting" : "not accepting yet (cache rebuilding)") +
                        ", snapshot of " + std::to_string(s.snapshot_pods()) + " pods";
  std::string out = align({
      {"Version:", s.version()},
      {"Mode:", s.mode()},
      {"Node:", or_dash(s.node_name())},
      {"Ready:", yes_no(s.ready())},
      {"Backend:", s.backend()},
      {"Backend reason:", or_dash(s.backend_reason())},
      {"ztunnel:", ztunnel},
      {"Pods:", std::to_string(c.enrolled()) + " enrolled, " + std::to_string(c.without_netns()) +
                    " without netns (Keep), " + std::to_string(c.failed()) + " failed"},
      {"Host probes:", or_dash(s.host_probes())},
      {"Drift repairs:", std::to_string(s.drift_repairs())},
      {"Uptime:", duration(s.uptime_seconds())},
  });
  std::vector<std::vector<std::string>> cfg;
  for (const auto& e : s.config()) cfg.push_back({"  " + e.name(), or_dash(e.value())});
  if (!cfg.empty()) out += "Configuration:\n" + align(cfg);
  return out;
}

std::string pods_table(const admin::v1::ListPodsResponse& r) {
  if (r.pods().empty()) return "No pods known to the agent.\n";
  std::vector<std::vector<std::string>> rows = {
      {"NAMESPACE", "NAME", "STATE", "ZDS", "IPS", "NETNS"}};
  for (const auto& p : r.pods()) {
    rows.push_back({p.namespace_(), p.name(), p.state(), p.zds_state(), or_dash(join(p.ips(), ",")),
                    or_dash(p.netns())});
  }
  return align(rows);
}

std::string pod_table(const admin::v1::Pod& p) {
  const auto& rc = p.redirect();
  std::string redirect = "dns capture " + yes_no(rc.dns_capture()) + ", ipv6 " + yes_no(rc.ipv6()) +
                         ", ingress mode " + yes_no(rc.ingress_mode());
  if (!rc.virtual_interfaces().empty()) {
    redirect += ", virtual interfaces " + join(rc.virtual_interfaces(), ",");
  }
  std::vector<std::vector<std::string>> rows = {
      {"Pod:", p.namespace_() + "/" + p.name()},
      {"UID:", or_dash(p.uid())},
      {"Service account:", or_dash(p.service_account())},
      {"State:", p.state()},
      {"ZDS:", p.zds_state()},
      {"Sandbox:", or_dash(p.container_id())},
      {"Netns:",
       p.netns().empty() ? "-" : p.netns() + " (inode " + std::to_string(p.netns_inode()) + ")"},
      {"IPs:", or_dash(join(p.ips(), ", "))},
      {"Backend:", or_dash(p.backend())},
      {"Redirection:", p.state() == "failed" ? "-" : redirect},
      {"Enrolled at:", or_dash(p.enrolled_at())},
  };
  for (const auto& s : p.steps()) rows.push_back({"  " + s.name() + ":", ms(s.duration_ms())});
  rows.push_back({"Last error:", p.last_error().empty()
                                     ? "-"
                                     : p.last_error() + " (at " + p.last_error_at() + ")"});
  return align(rows);
}

std::string verify_table(const admin::v1::VerifyResponse& r) {
  std::string out;
  int clean = 0, drifted = 0, errors = 0;
  for (const auto& p : r.pods()) {
    const std::string name = p.namespace_() + "/" + p.name();
    if (!p.error().empty()) {
      ++errors;
      out += name + ": ERROR " + p.error() + "\n";
    } else if (p.clean()) {
      ++clean;
      out += name + ": clean\n";
    } else {
      ++drifted;
      out += name + ": DRIFT (" + std::to_string(p.problems_size()) + ")\n";
    }
    for (const auto& problem : p.problems()) out += "  - " + problem + "\n";
  }
  out += std::to_string(r.pods_size()) + (r.pods_size() == 1 ? " pod" : " pods") + ": " +
         std::to_string(clean) + " clean, " + std::to_string(drifted) + " drifted, " +
         std::to_string(errors) + " not checked\n";
  return out;
}

std::string trace_table(const admin::v1::TraceResponse& r) {
  std::vector<std::vector<std::string>> rows = {
      {"Receiver:",
       r.receiver() +
           (r.receiver_port() ? " (port " + std::to_string(r.receiver_port()) + ")" : "")},
      {"Original destination:", r.original_destination().empty() ? "-" : r.original_destination()},
      {"Enrolled:", r.enrolled() ? "yes" : "no"},
      {"Decisions:", r.decisions().empty() ? "none counted" : r.decisions(0)}};
  for (int i = 1; i < r.decisions_size(); ++i) rows.push_back({"", r.decisions(i)});
  return align(rows) + "\n" + r.explanation() + "\n";
}

std::string event_line(const admin::v1::Event& e) {
  std::string who = e.namespace_().empty() ? "-" : e.namespace_() + "/" + e.name();
  return e.time() + "  " + e.kind() + "  " + who + (e.message().empty() ? "" : "  " + e.message()) +
         "\n";
}

}  // namespace ambient::ctl
