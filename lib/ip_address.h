// IP addresses and prefixes as the CNI result and the /cmdadd body carry
// them. Parsing and printing go through inet_pton/inet_ntop, which print
// the same canonical text as Go's net.IP for the forms CNI uses.
#pragma once

#include <netinet/in.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "lib/result.h"

namespace ambient {

struct IpAddress {
  int family = 0;  // AF_INET or AF_INET6; 0 = unset
  std::array<uint8_t, 16> bytes{};

  static Result<IpAddress> parse(std::string_view text);
  // IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes plain IPv4, as Go's To4().
  IpAddress unmapped() const;
  std::string to_string() const;
  size_t size() const { return family == AF_INET ? 4 : 16; }
  bool operator==(const IpAddress&) const = default;
};

struct IpPrefix {
  IpAddress address;  // not masked: CNI keeps the host address ("10.0.0.2/24")
  int prefix_len = 0;

  static Result<IpPrefix> parse(std::string_view cidr);
  std::string to_string() const;
  // Raw mask bytes (4 or 16), as Go's net.IPMask.
  std::string mask_bytes() const;
};

std::string base64_encode(std::string_view raw);
Result<std::string> base64_decode(std::string_view text);

}  // namespace ambient
