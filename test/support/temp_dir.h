// TempDir: a fresh directory for one test under the system's temp dir
// ($TMPDIR, else /tmp), removed with everything in it when the test ends,
// also when it fails.
#pragma once

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <system_error>

namespace ambient::test {

class TempDir {
 public:
  // Named `prefix` and six random characters.
  explicit TempDir(const std::string& prefix = "amb-test-") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "XXXXXX")).string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace ambient::test
