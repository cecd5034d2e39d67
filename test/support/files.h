// Whole-file reads and writes for tests, and a file's identity (device and
// inode), which is also what identifies a network namespace.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

namespace ambient::test {

// The whole file, or nullopt when it cannot be opened.
inline std::optional<std::string> try_read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The whole file; empty when it does not exist (yet), like a log or state
// file its process has not written.
inline std::string read_file(const std::string& path) { return try_read_file(path).value_or(""); }

// Creates or replaces `path` with exactly `text`; fails the test when that
// does not work.
inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.flush();
  INFO("writing " << path);
  REQUIRE(f.good());
}

// (st_dev, st_ino) of what `path` names, links followed; fails the test
// when it does not exist.
inline std::pair<dev_t, ino_t> file_id(const std::string& path) {
  struct stat st {};
  INFO("stat " << path);
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return {st.st_dev, st.st_ino};
}

}  // namespace ambient::test
