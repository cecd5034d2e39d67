// Whether the agent's DaemonSet still targets a node (docs/node-agent.md#shutdown):
// nodeSelector and required node affinity, as the scheduler reads them.
#include <catch2/catch.hpp>

#include "k8s/node_affinity.h"

using namespace ambient;
using namespace ambient::k8s;
using json::Json;

namespace {

const Json kNode = Json::parse(R"({"metadata":{"name":"node-1","labels":{
  "kubernetes.io/os":"linux","pool":"mesh","cores":"8","gpu":""}}})");

Json term(const std::string& text) { return Json::parse(text); }

Json daemonset(const std::string& pod_spec) {
  return Json::parse(R"({"metadata":{"name":"istio-cni-node"},"spec":{"template":{"spec":)" +
                     pod_spec + "}}}");
}

Json required(const std::string& terms) {
  return daemonset(
      R"({"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":)" +
      terms + "}}}}");
}

}  // namespace

TEST_CASE("node selector terms: each label operator as the scheduler evaluates it",
          "[k8s][affinity]") {
  struct Case {
    const char* expr;
    bool match;
  };
  auto c = GENERATE(values<Case>({
      {R"({"key":"pool","operator":"In","values":["mesh","edge"]})", true},
      {R"({"key":"pool","operator":"In","values":["edge"]})", false},
      {R"({"key":"missing","operator":"In","values":["x"]})", false},
      {R"({"key":"pool","operator":"NotIn","values":["edge"]})", true},
      {R"({"key":"pool","operator":"NotIn","values":["mesh"]})", false},
      {R"({"key":"missing","operator":"NotIn","values":["x"]})", true},
      {R"({"key":"gpu","operator":"Exists"})", true},
      {R"({"key":"missing","operator":"Exists"})", false},
      {R"({"key":"missing","operator":"DoesNotExist"})", true},
      {R"({"key":"pool","operator":"DoesNotExist"})", false},
      {R"({"key":"cores","operator":"Gt","values":["4"]})", true},
      {R"({"key":"cores","operator":"Gt","values":["8"]})", false},
      {R"({"key":"cores","operator":"Lt","values":["+16"]})", true},
      {R"({"key":"cores","operator":"Lt","values":["-1"]})", false},
      {R"({"key":"pool","operator":"Gt","values":["1"]})", false},     // not a number
      {R"({"key":"missing","operator":"Lt","values":["1"]})", false},  // no label
      // Invalid requirements fail their term.
      {R"({"key":"pool","operator":"In","values":[]})", false},
      {R"({"key":"missing","operator":"NotIn"})", false},
      {R"({"key":"gpu","operator":"Exists","values":["x"]})", false},
      {R"({"key":"cores","operator":"Gt","values":["4","5"]})", false},
      {R"({"key":"cores","operator":"Gt","values":["four"]})", false},
      {R"({"key":"missing","operator":"Matches","values":["x"]})", false},
  }));
  INFO(c.expr);
  CHECK(node_selector_term_matches(term(std::string(R"({"matchExpressions":[)") + c.expr + "]}"),
                                   kNode) == c.match);
}

TEST_CASE("node selector terms: requirements are ANDed; fields name the node", "[k8s][affinity]") {
  CHECK(node_selector_term_matches(
      term(R"({"matchExpressions":[{"key":"pool","operator":"In","values":["mesh"]},
                                   {"key":"kubernetes.io/os","operator":"In","values":["linux"]}]})"),
      kNode));
  CHECK_FALSE(node_selector_term_matches(
      term(R"({"matchExpressions":[{"key":"pool","operator":"In","values":["mesh"]},
                                   {"key":"kubernetes.io/os","operator":"In","values":["windows"]}]})"),
      kNode));
  CHECK(node_selector_term_matches(
      term(R"({"matchFields":[{"key":"metadata.name","operator":"In","values":["node-1"]}]})"),
      kNode));
  CHECK_FALSE(node_selector_term_matches(
      term(R"({"matchFields":[{"key":"metadata.name","operator":"NotIn","values":["node-1"]}]})"),
      kNode));
  CHECK_FALSE(node_selector_term_matches(
      term(R"({"matchExpressions":[{"key":"pool","operator":"In","values":["mesh"]}],
               "matchFields":[{"key":"metadata.name","operator":"In","values":["node-2"]}]})"),
      kNode));
  // Fields take In/NotIn with exactly one value.
  CHECK_FALSE(node_selector_term_matches(
      term(R"({"matchFields":[{"key":"metadata.name","operator":"In","values":["node-1","x"]}]})"),
      kNode));
  CHECK_FALSE(node_selector_term_matches(
      term(R"({"matchFields":[{"key":"metadata.name","operator":"Exists"}]})"), kNode));
  // An empty term matches nothing.
  CHECK_FALSE(node_selector_term_matches(term("{}"), kNode));
  CHECK_FALSE(
      node_selector_term_matches(term(R"({"matchExpressions":[],"matchFields":[]})"), kNode));
}

TEST_CASE("a DaemonSet targets a node through its nodeSelector and required affinity",
          "[k8s][affinity]") {
  // No constraints at all: every node.
  CHECK(daemonset_targets_node(daemonset("{}"), kNode));
  CHECK(daemonset_targets_node(Json::parse(R"({"metadata":{"name":"x"}})"), kNode));

  CHECK(daemonset_targets_node(daemonset(R"({"nodeSelector":{"pool":"mesh"}})"), kNode));
  CHECK_FALSE(daemonset_targets_node(daemonset(R"({"nodeSelector":{"pool":"edge"}})"), kNode));
  CHECK_FALSE(daemonset_targets_node(
      daemonset(R"({"nodeSelector":{"pool":"mesh","kubernetes.io/os":"windows"}})"), kNode));

  // Terms are ORed.
  CHECK(daemonset_targets_node(
      required(R"([{"matchExpressions":[{"key":"pool","operator":"In","values":["edge"]}]},
                   {"matchFields":[{"key":"metadata.name","operator":"In","values":["node-1"]}]}])"),
      kNode));
  CHECK_FALSE(daemonset_targets_node(
      required(R"([{"matchExpressions":[{"key":"pool","operator":"In","values":["edge"]}]},
                   {"matchFields":[{"key":"metadata.name","operator":"In","values":["node-2"]}]}])"),
      kNode));
  CHECK_FALSE(daemonset_targets_node(required("[]"), kNode));

  // Both must hold.
  CHECK_FALSE(daemonset_targets_node(
      daemonset(R"({"nodeSelector":{"pool":"edge"},"affinity":{"nodeAffinity":{
        "requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[
          {"matchExpressions":[{"key":"pool","operator":"Exists"}]}]}}}})"),
      kNode));
  // Preferred affinity does not restrict placement.
  CHECK(daemonset_targets_node(
      daemonset(R"({"affinity":{"nodeAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[
        {"weight":1,"preference":{"matchExpressions":[{"key":"pool","operator":"In","values":["edge"]}]}}]}}})"),
      kNode));
}
