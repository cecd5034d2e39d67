#include "lib/ip_address.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace ambient {

Result<IpAddress> IpAddress::parse(std::string_view text) {
  std::string s(text);
  IpAddress a;
  if (::inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) {
    a.family = AF_INET;
    return a;
  }
  if (::inet_pton(AF_INET6, s.c_str(), a.bytes.data()) == 1) {
    a.family = AF_INET6;
    return a;
  }
  return make_error(Errc::InvalidArgument, "invalid IP address \"" + s + "\"");
}

IpAddress IpAddress::unmapped() const {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (family != AF_INET6 || std::memcmp(bytes.data(), kPrefix, 12) != 0) return *this;
  IpAddress v4;
  v4.family = AF_INET;
  std::memcpy(v4.bytes.data(), bytes.data() + 12, 4);
  return v4;
}

std::string IpAddress::to_string() const {
  if (family == 0) return "";
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family, bytes.data(), buf, sizeof buf);
  return buf;
}

Result<IpPrefix> IpPrefix::parse(std::string_view cidr) {
  auto slash = cidr.find('/');
  if (slash == std::string_view::npos) {
    return make_error(Errc::InvalidArgument,
                      "invalid CIDR address \"" + std::string(cidr) + "\" (no prefix length)");
  }
  auto addr = IpAddress::parse(cidr.substr(0, slash));
  if (!addr) {
    return make_error(Errc::InvalidArgument, "invalid CIDR address \"" + std::string(cidr) + "\"");
  }
  auto len_text = cidr.substr(slash + 1);
  int len = -1;
  auto [end, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
  int max = addr->family == AF_INET ? 32 : 128;
  if (ec != std::errc() || end != len_text.data() + len_text.size() || len_text.empty() ||
      len < 0 || len > max) {
    return make_error(Errc::InvalidArgument, "invalid CIDR address \"" + std::string(cidr) + "\"");
  }
  return IpPrefix{.address = *addr, .prefix_len = len};
}

std::string IpPrefix::to_string() const {
  return address.to_string() + "/" + std::to_string(prefix_len);
}

std::string IpPrefix::mask_bytes() const {
  std::string mask(address.size(), '\0');
  for (int i = 0; i < prefix_len; ++i) {
    char& byte = mask[static_cast<size_t>(i / 8)];
    byte = static_cast<char>(static_cast<unsigned char>(byte) | (0x80U >> (i % 8)));
  }
  return mask;
}

namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(std::string_view raw) {
  std::string out;
  size_t i = 0;
  for (; i + 2 < raw.size(); i += 3) {
    uint32_t n = (uint8_t(raw[i]) << 16) | (uint8_t(raw[i + 1]) << 8) | uint8_t(raw[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  if (i + 1 == raw.size()) {
    uint32_t n = uint8_t(raw[i]) << 16;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += "==";
  } else if (i + 2 == raw.size()) {
    uint32_t n = (uint8_t(raw[i]) << 16) | (uint8_t(raw[i + 1]) << 8);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

Result<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return make_error(Errc::InvalidArgument, "invalid base64 length");
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '=') {
      if (i < text.size() - 2) return make_error(Errc::InvalidArgument, "invalid base64 padding");
      ++pad;
      continue;
    }
    if (pad) return make_error(Errc::InvalidArgument, "invalid base64 padding");
    const char* p = std::strchr(kAlphabet, c);
    if (!p || c == '\0') return make_error(Errc::InvalidArgument, "invalid base64 character");
    acc = (acc << 6) | uint32_t(p - kAlphabet);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

}  // namespace ambient
