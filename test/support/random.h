// Random names for what tests create on a shared host (netns, cgroups,
// pod UIDs), so parallel and leftover runs never collide.
#pragma once

#include <cstddef>
#include <random>
#include <string>

namespace ambient::test {

// `n` random lowercase hex digits.
inline std::string random_hex(size_t n) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string out;
  while (out.size() < n) out += "0123456789abcdef"[rng() % 16];
  return out;
}

}  // namespace ambient::test
