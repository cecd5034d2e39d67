// Whether the agent's DaemonSet still places a pod on this node: its pod
// template's nodeSelector and required node affinity, evaluated as the
// scheduler evaluates them. Shutdown asks, since a node the DaemonSet no
// longer targets gets no replacement agent: that is an uninstall
// (docs/node-agent.md#shutdown). Taints and tolerations are not considered.
#pragma once

#include "lib/json_fields.h"

namespace ambient::k8s {

// One nodeSelectorTerm against a Node object: every matchExpressions
// requirement holds on the node's labels (In, NotIn, Exists, DoesNotExist,
// Gt, Lt) and every matchFields requirement on its fields (only
// metadata.name has a value; In and NotIn with exactly one value). A term
// with neither list, or with an invalid requirement, matches nothing.
bool node_selector_term_matches(const json::Json& term, const json::Json& node);

// The DaemonSet's spec.template.spec: every nodeSelector label equal on the
// node, and, when affinity.nodeAffinity.requiredDuringScheduling-
// IgnoredDuringExecution is set, one of its nodeSelectorTerms matching.
bool daemonset_targets_node(const json::Json& daemonset, const json::Json& node);

}  // namespace ambient::k8s
