// Crafted Ethernet + IPv4/IPv6 + TCP/UDP packets for BPF_PROG_TEST_RUN,
// with correct checksums, and the reading of what a program made of one
// (addresses, ports, whether its checksums still hold).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace ambient::test::ebpf {

inline constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kAck = 0x10;

struct PacketSpec {
  std::string src, dst;  // both IPv4 or both IPv6
  uint16_t sport = 40000, dport = 80;
  int proto = IPPROTO_TCP;
  uint8_t tcp_flags = kSyn;
  bool udp_no_checksum = false;  // IPv4 UDP may carry 0: "no checksum"
  std::string payload;
};

struct Seen {
  std::string src, dst;
  uint16_t sport = 0, dport = 0;
  bool ip_checksum_ok = false;  // always true for IPv6 (no header checksum)
  bool l4_checksum_ok = false;
  uint16_t l4_checksum = 0;
  std::vector<uint8_t> dst_mac;
};

namespace detail {

inline uint32_t sum16(const uint8_t* p, size_t n, uint32_t acc = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) acc += (uint32_t(p[i]) << 8) | p[i + 1];
  if (n & 1) acc += uint32_t(p[n - 1]) << 8;
  return acc;
}

inline uint16_t fold(uint32_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint16_t>(~acc & 0xffff);
}

inline bool v6(const std::string& ip) { return ip.find(':') != std::string::npos; }

// The L4 checksum over the pseudo-header and the segment (its checksum
// field included: 0 when building, the stored value when checking).
inline uint16_t l4_sum(const uint8_t* saddr, const uint8_t* daddr, size_t alen, int proto,
                       const uint8_t* l4, size_t l4len) {
  uint32_t acc = sum16(saddr, alen) + sum16(daddr, alen);
  acc += static_cast<uint32_t>(proto) + static_cast<uint32_t>(l4len);
  return fold(sum16(l4, l4len, acc));
}

inline size_t checksum_offset(int proto) { return proto == IPPROTO_TCP ? 16 : 6; }

}  // namespace detail

inline std::vector<uint8_t> build_packet(const PacketSpec& s) {
  const bool six = detail::v6(s.src);
  const size_t l4len = (s.proto == IPPROTO_TCP ? 20 : 8) + s.payload.size();
  const size_t iplen = six ? 40 : 20;
  std::vector<uint8_t> p(14 + iplen + l4len, 0);
  const uint8_t macs[12] = {2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2};
  std::memcpy(p.data(), macs, 12);
  p[12] = six ? 0x86 : 0x08;
  p[13] = six ? 0xdd : 0x00;
  uint8_t* ip = p.data() + 14;
  uint8_t saddr[16] = {}, daddr[16] = {};
  const size_t alen = six ? 16 : 4;
  ::inet_pton(six ? AF_INET6 : AF_INET, s.src.c_str(), saddr);
  ::inet_pton(six ? AF_INET6 : AF_INET, s.dst.c_str(), daddr);
  if (six) {
    ip[0] = 0x60;
    ip[4] = static_cast<uint8_t>(l4len >> 8);
    ip[5] = static_cast<uint8_t>(l4len);
    ip[6] = static_cast<uint8_t>(s.proto);
    ip[7] = 64;
    std::memcpy(ip + 8, saddr, 16);
    std::memcpy(ip + 24, daddr, 16);
  } else {
    const size_t total = iplen + l4len;
    ip[0] = 0x45;
    ip[2] = static_cast<uint8_t>(total >> 8);
    ip[3] = static_cast<uint8_t>(total);
    ip[8] = 64;
    ip[9] = static_cast<uint8_t>(s.proto);
    std::memcpy(ip + 12, saddr, 4);
    std::memcpy(ip + 16, daddr, 4);
    const uint16_t c = detail::fold(detail::sum16(ip, 20));
    ip[10] = static_cast<uint8_t>(c >> 8);
    ip[11] = static_cast<uint8_t>(c);
  }
  uint8_t* l4 = ip + iplen;
  l4[0] = static_cast<uint8_t>(s.sport >> 8);
  l4[1] = static_cast<uint8_t>(s.sport);
  l4[2] = static_cast<uint8_t>(s.dport >> 8);
  l4[3] = static_cast<uint8_t>(s.dport);
  if (s.proto == IPPROTO_TCP) {
    l4[4] = 0x11;  // a sequence number
    l4[12] = 5 << 4;
    l4[13] = s.tcp_flags;
    l4[14] = 0xff;  // window
  } else {
    l4[4] = static_cast<uint8_t>(l4len >> 8);
    l4[5] = static_cast<uint8_t>(l4len);
  }
  std::copy(s.payload.begin(), s.payload.end(), l4 + (s.proto == IPPROTO_TCP ? 20 : 8));
  if (!(s.proto == IPPROTO_UDP && s.udp_no_checksum && !six)) {
    uint16_t c = detail::l4_sum(saddr, daddr, alen, s.proto, l4, l4len);
    if (c == 0 && s.proto == IPPROTO_UDP) c = 0xffff;
    const size_t off = detail::checksum_offset(s.proto);
    l4[off] = static_cast<uint8_t>(c >> 8);
    l4[off + 1] = static_cast<uint8_t>(c);
  }
  return p;
}

inline Seen read_packet(const std::vector<uint8_t>& p) {
  Seen out;
  out.dst_mac.assign(p.begin(), p.begin() + 6);
  const bool six = p[12] == 0x86;
  const uint8_t* ip = p.data() + 14;
  const size_t iplen = six ? 40 : static_cast<size_t>(ip[0] & 0xf) * 4;
  const int proto = six ? ip[6] : ip[9];
  const uint8_t* saddr = ip + (six ? 8 : 12);
  const uint8_t* daddr = ip + (six ? 24 : 16);
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(six ? AF_INET6 : AF_INET, saddr, buf, sizeof buf);
  out.src = buf;
  ::inet_ntop(six ? AF_INET6 : AF_INET, daddr, buf, sizeof buf);
  out.dst = buf;
  out.ip_checksum_ok = six || detail::fold(detail::sum16(ip, iplen)) == 0;
  const uint8_t* l4 = ip + iplen;
  const size_t l4len = p.size() - 14 - iplen;
  out.sport = static_cast<uint16_t>((l4[0] << 8) | l4[1]);
  out.dport = static_cast<uint16_t>((l4[2] << 8) | l4[3]);
  const size_t off = detail::checksum_offset(proto);
  out.l4_checksum = static_cast<uint16_t>((l4[off] << 8) | l4[off + 1]);
  out.l4_checksum_ok = (proto == IPPROTO_UDP && !six && out.l4_checksum == 0) ||
                       detail::l4_sum(saddr, daddr, six ? 16 : 4, proto, l4, l4len) == 0;
  return out;
}

}  // namespace ambient::test::ebpf
