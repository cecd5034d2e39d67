// ip("10.0.0.5"): an IpAddress from a literal the test knows is valid.
#pragma once

#include <catch2/catch.hpp>

#include "lib/ip_address.h"

namespace ambient::test {

inline IpAddress ip(const char* text) {
  auto a = IpAddress::parse(text);
  INFO(text);
  REQUIRE(a);
  return *a;
}

}  // namespace ambient::test
