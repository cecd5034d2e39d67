#include "k8s/node_affinity.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lib/k8s/enablement.h"

namespace ambient::k8s {
namespace {

const json::Json* path(const json::Json& obj, std::initializer_list<std::string_view> keys) {
  const json::Json* at = &obj;
  for (auto k : keys) {
    at = json::find(*at, k);
    if (!at) return nullptr;
  }
  return at;
}

std::optional<int64_t> to_int(const std::string& s) {
  int64_t v = 0;
  const char* begin = s.data();
  if (!s.empty() && s[0] == '+') ++begin;  // strconv.ParseInt accepts either sign, once
  if (begin != s.data() && begin < s.data() + s.size() && *begin == '-') return std::nullopt;
  auto [end, ec] = std::from_chars(begin, s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// One requirement against `values` (the node's labels, or its fields).
// nullopt: the requirement is invalid, which fails its whole term.
std::optional<bool> requirement_holds(const json::Json& req,
                                      const std::map<std::string, std::string>& values,
                                      bool field) {
  const json::Json* key = json::find(req, "key");
  const json::Json* op = json::find(req, "operator");
  if (!key || !key->is_string() || !op || !op->is_string()) return std::nullopt;
  std::vector<std::string> want;
  if (const json::Json* vs = json::find(req, "values")) {
    if (!vs->is_array()) return std::nullopt;
    for (const auto& v : *vs) {
      if (!v.is_string()) return std::nullopt;
      want.push_back(v.get<std::string>());
    }
  }
  const std::string o = op->get<std::string>();
  auto it = values.find(key->get<std::string>());
  const bool has = it != values.end();
  const bool in = has && std::find(want.begin(), want.end(), it->second) != want.end();
  if (field) {
    // Fields take In and NotIn with exactly one value; a field the node
    // does not have compares as "".
    if (want.size() != 1) return std::nullopt;
    const std::string got = has ? it->second : "";
    if (o == "In") return got == want[0];
    if (o == "NotIn") return got != want[0];
    return std::nullopt;
  }
  if (o == "In" || o == "NotIn") {
    if (want.empty()) return std::nullopt;
    return o == "In" ? in : !in;  // a missing label satisfies NotIn
  }
  if (o == "Exists" || o == "DoesNotExist") {
    if (!want.empty()) return std::nullopt;
    return o == "Exists" ? has : !has;
  }
  if (o == "Gt" || o == "Lt") {
    if (want.size() != 1) return std::nullopt;
    auto bound = to_int(want[0]);
    if (!bound) return std::nullopt;
    auto got = has ? to_int(it->second) : std::nullopt;
    if (!got) return false;  // no label, or not a number: not greater, not less
    return o == "Gt" ? *got > *bound : *got < *bound;
  }
  return std::nullopt;
}

// Every requirement of the list holds (an absent list holds); nullopt when
// one is invalid.
std::optional<bool> all_hold(const json::Json* reqs,
                             const std::map<std::string, std::string>& values, bool field) {
  if (!reqs) return true;
  if (!reqs->is_array()) return std::nullopt;
  bool all = true;
  for (const auto& r : *reqs) {
    auto holds = requirement_holds(r, values, field);
    if (!holds) return std::nullopt;
    all = all && *holds;
  }
  return all;
}

}  // namespace

bool node_selector_term_matches(const json::Json& term, const json::Json& node) {
  const json::Json* exprs = json::find(term, "matchExpressions");
  const json::Json* fields = json::find(term, "matchFields");
  const bool empty_exprs = !exprs || (exprs->is_array() && exprs->empty());
  const bool empty_fields = !fields || (fields->is_array() && fields->empty());
  if (empty_exprs && empty_fields) return false;
  std::map<std::string, std::string> node_fields;
  if (const json::Json* name = path(node, {"metadata", "name"}); name && name->is_string()) {
    node_fields["metadata.name"] = name->get<std::string>();
  }
  auto labels = all_hold(exprs, labels_of(node), false);
  auto by_field = all_hold(fields, node_fields, true);
  return labels && by_field && *labels && *by_field;
}

bool daemonset_targets_node(const json::Json& daemonset, const json::Json& node) {
  const json::Json* pod_spec = path(daemonset, {"spec", "template", "spec"});
  if (!pod_spec) return true;
  if (const json::Json* selector = json::find(*pod_spec, "nodeSelector")) {
    if (!selector->is_object()) return false;
    const auto labels = labels_of(node);
    for (auto it = selector->begin(); it != selector->end(); ++it) {
      auto l = labels.find(it.key());
      if (!it->is_string() || l == labels.end() || l->second != it->get<std::string>()) {
        return false;
      }
    }
  }
  const json::Json* required = path(
      *pod_spec, {"affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"});
  if (!required) return true;
  const json::Json* terms = json::find(*required, "nodeSelectorTerms");
  if (!terms || !terms->is_array()) return false;
  return std::any_of(terms->begin(), terms->end(),
                     [&](const json::Json& t) { return node_selector_term_matches(t, node); });
}

}  // namespace ambient::k8s
