// A uniquely named network namespace for a test (`ip netns add`, so tools
// can reach it by name too), with `lo` up, deleted even when the test fails.
#pragma once

#include <catch2/catch.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "netns/netns.h"
#include "process/process.h"

namespace ambient::test {

class TestNetns {
 public:
  explicit TestNetns(const std::string& prefix = "amb-t-") {
    std::random_device rd;
    name_ = prefix + std::to_string(rd() % 1000000);
    auto added = run_checked({.argv = {"ip", "netns", "add", name_}});
    INFO((added ? std::string() : added.error().describe()));
    REQUIRE(added);
    created_ = true;
    exec({"ip", "link", "set", "lo", "up"});
    auto ns = netns::Netns::open(path());
    REQUIRE(ns);
    ns_.emplace(std::move(*ns));
  }
  ~TestNetns() {
    if (created_) (void)run_command({.argv = {"ip", "netns", "del", name_}});
  }
  TestNetns(const TestNetns&) = delete;
  TestNetns& operator=(const TestNetns&) = delete;

  const netns::Netns& ns() const { return *ns_; }
  const std::string& name() const { return name_; }
  std::string path() const { return "/var/run/netns/" + name_; }

  // Runs a command inside; fails the test unless it succeeds. Its stdout.
  std::string exec(std::vector<std::string> argv, const std::string& stdin_data = "") const {
    argv.insert(argv.begin(), {"ip", "netns", "exec", name_});
    auto r = run_checked({.argv = argv, .stdin_data = stdin_data});
    INFO((r ? std::string() : r.error().describe()));
    REQUIRE(r);
    return r->out;
  }

 private:
  std::string name_;
  bool created_ = false;
  std::optional<netns::Netns> ns_;
};

}  // namespace ambient::test
