// The two iptables variants: which binaries run (iptables-legacy-* or
// iptables-nft-*, and their ip6tables-* twins) and so where the kernel
// keeps the rules (x_tables or nf_tables).
#pragma once

#include <string>
#include <string_view>

#include "redirect/backend.h"

namespace ambient::redirect {

enum class IptablesVariant { Legacy, Nft };

// "iptables-legacy" or "iptables-nft": the binaries' common prefix, and the
// name of the backend that runs them.
constexpr std::string_view variant_name(IptablesVariant variant) {
  return variant == IptablesVariant::Legacy ? "iptables-legacy" : "iptables-nft";
}

// One of the variant's tools for one IP family, e.g. (Nft, V6, "-save"):
// "ip6tables-nft-save".
inline std::string iptables_binary(IptablesVariant variant, IpFamily ip, std::string_view tool) {
  std::string bin(variant_name(variant));
  if (ip == IpFamily::V6) bin.replace(0, 2, "ip6");  // iptables-nft -> ip6tables-nft
  return bin + std::string(tool);
}

}  // namespace ambient::redirect
