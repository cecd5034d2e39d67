#include <catch2/catch.hpp>

#include "lib/cni_event.h"

using namespace ambient;
using namespace ambient::cni;

TEST_CASE("masks are base64 of the raw mask bytes, as Go's net.IPNet", "[event]") {
  auto [cidr, mask] = GENERATE(table<std::string, std::string>({
      {"10.0.0.2/24", "////AA=="},
      {"10.0.0.2/16", "//8AAA=="},
      {"10.0.0.2/32", "/////w=="},
      {"fd00::2/64", "//////////8AAAAAAAAAAA=="},
      {"fd00::2/128", "/////////////////////w=="},
  }));
  auto p = IpPrefix::parse(cidr);
  REQUIRE(p);
  CHECK(base64_encode(p->mask_bytes()) == mask);
}

TEST_CASE("the agent decodes upstream's body with Go semantics", "[event]") {
  auto ev = decode_event(
      R"({"netns":"/var/run/netns/x","PODNAME":"p","PodNamespace":"ns","Extra":[1,2],
          "IPs":[{"Interface":null,"Address":{"IP":"::ffff:10.0.0.2","Mask":"////AA=="},"Gateway":""},
                 {"Address":{"IP":"fd00::5","Mask":"garbage!"}}]})");
  REQUIRE(ev);
  CHECK(ev->netns == "/var/run/netns/x");
  CHECK(ev->pod_name == "p");
  REQUIRE(ev->ips.size() == 2);
  CHECK(ev->ips[0].address.address.to_string() == "10.0.0.2");  // v4-mapped is unmapped
  CHECK(ev->ips[0].address.prefix_len == 24);
  CHECK(ev->ips[1].address.address.to_string() == "fd00::5");  // an unreadable mask is tolerated
}

TEST_CASE("bad bodies are rejected with a clear message", "[event]") {
  auto [body, fragment] = GENERATE(table<std::string, std::string>({
      {"", "empty request body"},
      {"{", "parse error"},
      {R"({"Netns":"/x"} trailing)", "parse error"},
      {"[]", "must be a JSON object"},
      {R"({"PodName":7})", "PodName"},
      {R"({"IPs":{}})", "IPs"},
      {R"({"IPs":[{"Address":{"IP":"300.1.1.1"}}]})", "invalid IP address"},
  }));
  auto ev = decode_event(body);
  REQUIRE_FALSE(ev);
  CHECK(ev.error().code == make_error_code(Errc::InvalidArgument));
  CHECK_THAT(ev.error().describe(), Catch::Contains(fragment));
}

TEST_CASE("encode and decode round-trip", "[event]") {
  CniEvent e{.netns = "/proc/1/ns/net", .pod_name = "a", .pod_namespace = "b", .pod_uid = "u"};
  e.ips.push_back({.interface = 2,
                   .address = *IpPrefix::parse("10.9.8.7/20"),
                   .gateway = IpAddress::parse("10.9.0.1").value()});
  auto d = decode_event(encode_event(e));
  REQUIRE(d);
  CHECK(d->pod_uid == "u");
  CHECK(d->ips.at(0).interface == 2);
  CHECK(d->ips.at(0).address.to_string() == "10.9.8.7/20");
}
