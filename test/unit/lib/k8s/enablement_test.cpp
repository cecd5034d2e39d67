#include <catch2/catch.hpp>

#include "lib/k8s/enablement.h"

using namespace ambient;
using namespace ambient::k8s;
using json::Json;

namespace {
Json pod(Json labels, Json annotations = Json::object(), bool host_network = false) {
  return {{"metadata",
           {{"name", "p"}, {"namespace", "ns"}, {"labels", labels}, {"annotations", annotations}}},
          {"spec", {{"hostNetwork", host_network}}}};
}
Json ns(Json labels) { return {{"metadata", {{"name", "ns"}, {"labels", labels}}}}; }
}  // namespace

TEST_CASE("the default selectors decide as upstream's chart does", "[enablement]") {
  auto sel = default_enablement_selectors();
  const Json ambient = {{"istio.io/dataplane-mode", "ambient"}};
  const Json none = {{"istio.io/dataplane-mode", "none"}};
  const Json plain = Json::object();
  CHECK(pod_matches(pod(ambient), ns(plain), sel));       // pod label alone
  CHECK(pod_matches(pod(plain), ns(ambient), sel));       // namespace label
  CHECK_FALSE(pod_matches(pod(none), ns(ambient), sel));  // opted out
  CHECK_FALSE(pod_matches(pod(plain), ns(plain), sel));
  CHECK_FALSE(pod_matches(pod(ambient, Json::object(), true), ns(ambient), sel));  // hostNetwork
  CHECK_FALSE(pod_matches(pod(plain, {{"sidecar.istio.io/status", "{}"}}), ns(ambient), sel));
  CHECK_FALSE(pod_matches(pod(ambient), ns(ambient), {}));  // no selectors: never
}

TEST_CASE("label selector operators", "[enablement]") {
  auto s = LabelSelector::parse(Json::parse(R"({"matchLabels":{"app":"web"},"matchExpressions":[
      {"key":"tier","operator":"In","values":["a","b"]},
      {"key":"env","operator":"NotIn","values":["prod"]},
      {"key":"team","operator":"Exists"},
      {"key":"legacy","operator":"DoesNotExist"}]})"));
  REQUIRE(s);
  std::map<std::string, std::string> l = {{"app", "web"}, {"tier", "a"}, {"team", "x"}};
  CHECK(s->matches(l));
  l["env"] = "prod";
  CHECK_FALSE(s->matches(l));
  l["env"] = "dev";
  CHECK(s->matches(l));
  l["legacy"] = "1";
  CHECK_FALSE(s->matches(l));
  l.erase("legacy");
  l.erase("team");
  CHECK_FALSE(s->matches(l));
  CHECK(LabelSelector::parse(Json::object())->matches({}));
}

TEST_CASE("invalid selectors are rejected", "[enablement]") {
  auto bad =
      GENERATE(as<std::string>{}, R"({"matchExpressions":[{"key":"a","operator":"Equals"}]})",
               R"({"matchExpressions":[{"key":"a","operator":"In"}]})",
               R"({"matchExpressions":[{"key":"a","operator":"Exists","values":["x"]}]})",
               R"({"matchLabels":{"a":1}})");
  CHECK_FALSE(LabelSelector::parse(Json::parse(bad)));
}

TEST_CASE("terminal phases", "[enablement]") {
  CHECK(pod_is_terminal(Json::parse(R"({"status":{"phase":"Succeeded"}})")));
  CHECK(pod_is_terminal(Json::parse(R"({"status":{"phase":"Failed"}})")));
  CHECK_FALSE(pod_is_terminal(Json::parse(R"({"status":{"phase":"Running"}})")));
  CHECK_FALSE(pod_is_terminal(Json::object()));
}
