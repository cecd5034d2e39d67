// Upstream's ambient enrollment decision (docs/cni-plugin.md#enablement,
// docs/node-agent.md#decision), shared by the plugin's fallback path and
// the agent so both decide identically. Objects are Kubernetes JSON (pods
// and namespaces as the API returns them).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "lib/json_fields.h"
#include "lib/result.h"

namespace ambient::k8s {

struct Requirement {
  std::string key;
  std::string op;  // In, NotIn, Exists, DoesNotExist
  std::vector<std::string> values;
};

// metav1.LabelSelector. Empty matches everything.
struct LabelSelector {
  std::map<std::string, std::string> match_labels;
  std::vector<Requirement> match_expressions;

  // Validates like metav1.LabelSelectorAsSelector: unknown operators, In/NotIn
  // without values, Exists/DoesNotExist with values are errors.
  static Result<LabelSelector> parse(const json::Json& j);
  bool matches(const std::map<std::string, std::string>& labels) const;
};

struct EnablementSelector {
  LabelSelector pod, ns;
};

Result<std::vector<EnablementSelector>> parse_enablement_selectors(const json::Json& list);

// The chart's default selectors: pod label dataplane-mode=ambient, or
// namespace label dataplane-mode=ambient without pod label =none.
std::vector<EnablementSelector> default_enablement_selectors();

inline constexpr std::string_view kDataplaneModeLabel = "istio.io/dataplane-mode";
inline constexpr std::string_view kRedirectionAnnotation = "ambient.istio.io/redirection";
inline constexpr std::string_view kSidecarStatusAnnotation = "sidecar.istio.io/status";

std::map<std::string, std::string> labels_of(const json::Json& obj);
std::map<std::string, std::string> annotations_of(const json::Json& obj);

// hostNetwork pods and sidecar pods never; otherwise some selector must
// match both the pod's and the namespace's labels.
bool pod_matches(const json::Json& pod, const json::Json& ns,
                 const std::vector<EnablementSelector>& selectors);

bool pod_is_terminal(const json::Json& pod);  // phase Failed or Succeeded

}  // namespace ambient::k8s
