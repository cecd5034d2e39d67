#include "lib/k8s/enablement.h"

#include <algorithm>

namespace ambient::k8s {

namespace {

std::map<std::string, std::string> string_map(const json::Json& obj, std::string_view key) {
  std::map<std::string, std::string> out;
  const json::Json* m = json::find(obj, key);
  if (!m || !m->is_object()) return out;
  for (auto it = m->begin(); it != m->end(); ++it) {
    if (it->is_string()) out[it.key()] = it->get<std::string>();
  }
  return out;
}

const json::Json* metadata(const json::Json& obj) { return json::find(obj, "metadata"); }

}  // namespace

Result<LabelSelector> LabelSelector::parse(const json::Json& j) {
  LabelSelector s;
  if (j.is_null()) return s;
  if (!j.is_object()) return json::type_error("selector", "an object", j, "label selector");
  if (const auto* ml = json::find(j, "matchLabels")) {
    if (!ml->is_object())
      return json::type_error("matchLabels", "an object", *ml, "label selector");
    for (auto it = ml->begin(); it != ml->end(); ++it) {
      if (!it->is_string()) {
        return json::type_error("matchLabels." + it.key(), "a string", *it, "label selector");
      }
      s.match_labels[it.key()] = it->get<std::string>();
    }
  }
  if (const auto* me = json::find(j, "matchExpressions")) {
    if (!me->is_array()) {
      return json::type_error("matchExpressions", "an array", *me, "label selector");
    }
    for (const auto& e : *me) {
      Requirement r;
      if (!e.is_object())
        return json::type_error("matchExpressions[]", "an object", e, "label selector");
      AMBIENT_RETURN_IF_ERROR(json::read(e, "key", r.key, "label selector"));
      AMBIENT_RETURN_IF_ERROR(json::read(e, "operator", r.op, "label selector"));
      AMBIENT_RETURN_IF_ERROR(json::read(e, "values", r.values, "label selector"));
      if (r.op == "In" || r.op == "NotIn") {
        if (r.values.empty()) {
          return make_error(Errc::InvalidArgument, "label selector: values must be non-empty for " +
                                                       r.op + " (key " + r.key + ")");
        }
      } else if (r.op == "Exists" || r.op == "DoesNotExist") {
        if (!r.values.empty()) {
          return make_error(Errc::InvalidArgument, "label selector: values must be empty for " +
                                                       r.op + " (key " + r.key + ")");
        }
      } else {
        return make_error(Errc::InvalidArgument, "label selector: \"" + r.op +
                                                     "\" is not a valid label selector operator");
      }
      s.match_expressions.push_back(std::move(r));
    }
  }
  return s;
}

bool LabelSelector::matches(const std::map<std::string, std::string>& labels) const {
  for (const auto& [k, v] : match_labels) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  for (const auto& r : match_expressions) {
    auto it = labels.find(r.key);
    bool has = it != labels.end();
    bool in = has && std::find(r.values.begin(), r.values.end(), it->second) != r.values.end();
    if (r.op == "In" && !in) return false;
    if (r.op == "NotIn" && in) return false;  // a missing label satisfies NotIn
    if (r.op == "Exists" && !has) return false;
    if (r.op == "DoesNotExist" && has) return false;
  }
  return true;
}

Result<std::vector<EnablementSelector>> parse_enablement_selectors(const json::Json& list) {
  std::vector<EnablementSelector> out;
  if (list.is_null()) return out;
  if (!list.is_array())
    return json::type_error("enablement selectors", "a list", list, "selectors");
  for (const auto& item : list) {
    if (!item.is_object())
      return json::type_error("enablement selector", "an object", item, "selectors");
    EnablementSelector s;
    if (const auto* p = json::find(item, "podSelector")) {
      AMBIENT_ASSIGN_OR_RETURN(s.pod, LabelSelector::parse(*p));
    }
    if (const auto* n = json::find(item, "namespaceSelector")) {
      AMBIENT_ASSIGN_OR_RETURN(s.ns, LabelSelector::parse(*n));
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<EnablementSelector> default_enablement_selectors() {
  const std::string key(kDataplaneModeLabel);
  EnablementSelector by_pod;
  by_pod.pod.match_labels[key] = "ambient";
  EnablementSelector by_ns;
  by_ns.pod.match_expressions.push_back({key, "NotIn", {"none"}});
  by_ns.ns.match_labels[key] = "ambient";
  return {by_pod, by_ns};
}

std::map<std::string, std::string> labels_of(const json::Json& obj) {
  const auto* md = metadata(obj);
  return md ? string_map(*md, "labels") : std::map<std::string, std::string>{};
}

std::map<std::string, std::string> annotations_of(const json::Json& obj) {
  const auto* md = metadata(obj);
  return md ? string_map(*md, "annotations") : std::map<std::string, std::string>{};
}

bool pod_matches(const json::Json& pod, const json::Json& ns,
                 const std::vector<EnablementSelector>& selectors) {
  if (const auto* spec = json::find(pod, "spec")) {
    if (const auto* hn = json::find(*spec, "hostNetwork");
        hn && hn->is_boolean() && hn->get<bool>()) {
      return false;
    }
  }
  if (annotations_of(pod).count(std::string(kSidecarStatusAnnotation))) return false;
  const auto pod_labels = labels_of(pod);
  const auto ns_labels = labels_of(ns);
  for (const auto& s : selectors) {
    if (s.pod.matches(pod_labels) && s.ns.matches(ns_labels)) return true;
  }
  return false;
}

bool pod_is_terminal(const json::Json& pod) {
  const auto* status = json::find(pod, "status");
  if (!status) return false;
  const auto* phase = json::find(*status, "phase");
  if (!phase || !phase->is_string()) return false;
  auto p = phase->get<std::string>();
  return p == "Failed" || p == "Succeeded";
}

}  // namespace ambient::k8s
