// TestNetns: a network namespace made for a test with `ip netns add` (so
// tools reach it by name too), `lo` up unless asked otherwise, deleted
// even when the test fails. in_netns() runs a function inside one.
#pragma once

#include <catch2/catch.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "netns/netns.h"
#include "process/process.h"
#include "support/random.h"
#include "support/require_ok.h"

namespace ambient::test {

struct NetnsOptions {
  std::string prefix = "amb-t-";  // the name: prefix and random hex digits
  std::string name;               // or exactly this name (the caller keeps it unique)
  bool lo_up = true;
};

class TestNetns {
 public:
  explicit TestNetns(const std::string& prefix = "amb-t-")
      : TestNetns(NetnsOptions{.prefix = prefix}) {}
  explicit TestNetns(const NetnsOptions& opts)
      : added_(opts.name.empty() ? opts.prefix + random_hex(6) : opts.name) {
    added_.add();
    if (opts.lo_up) exec({"ip", "link", "set", "lo", "up"});
  }
  TestNetns(const TestNetns&) = delete;
  TestNetns& operator=(const TestNetns&) = delete;

  // A handle on the namespace, opened on first use (from the test's thread).
  const netns::Netns& ns() const {
    if (!ns_) {
      auto ns = netns::Netns::open(path());
      AMBIENT_REQUIRE_OK(ns);
      ns_.emplace(std::move(*ns));
    }
    return *ns_;
  }
  const std::string& name() const { return added_.name; }
  std::string path() const { return "/var/run/netns/" + added_.name; }

  // Runs a command inside; fails the test unless it succeeds. Its stdout.
  std::string exec(std::vector<std::string> argv, const std::string& stdin_data = "",
                   std::chrono::milliseconds timeout = CommandSpec{}.timeout) const {
    argv.insert(argv.begin(), {"ip", "netns", "exec", added_.name});
    auto r = run_checked({.argv = argv, .stdin_data = stdin_data, .timeout = timeout});
    AMBIENT_REQUIRE_OK(r);
    return r->out;
  }

 private:
  // The name, and its deletion: a member of its own so that a constructor
  // failing after `ip netns add` still deletes the namespace.
  struct Added {
    std::string name;
    bool added = false;
    explicit Added(std::string n) : name(std::move(n)) {}
    ~Added() {
      if (added) (void)run_command({.argv = {"ip", "netns", "del", name}});
    }
    void add() {
      AMBIENT_REQUIRE_OK(run_checked({.argv = {"ip", "netns", "add", name}}));
      added = true;
    }
  };

  Added added_;
  mutable std::optional<netns::Netns> ns_;
};

// Calls `fn` (returning a Result) on a thread inside `n` and hands its
// Result back to the test's thread, so Catch2 assertions stay out of the
// worker.
template <class F>
auto in_netns(const TestNetns& n, F fn) -> decltype(fn()) {
  std::optional<decltype(fn())> out;
  auto r = netns::run_in_netns(n.ns(), [&]() -> Result<> {
    out.emplace(fn());
    return {};
  });
  if (!r) return std::move(r).error();
  return std::move(*out);
}

}  // namespace ambient::test
