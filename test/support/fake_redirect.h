// Redirection stand-ins for tests of the agent's pipeline: a backend that
// only counts what it is asked to do, and a host side that keeps the probe
// set as a list.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "redirect/backend.h"
#include "redirect/host.h"

namespace ambient::test {

// Succeeds at everything; counts installs, verifies (always complete) and
// removes. Safe to call from several threads.
class CountingBackend : public redirect::RedirectBackend {
 public:
  std::string_view name() const override { return "counting"; }
  Result<> install(const netns::Netns&, const redirect::PodRedirectConfig&,
                   const std::function<void()>& routed) override {
    if (routed) routed();
    ++installs;
    return {};
  }
  Result<redirect::VerifyReport> verify(const netns::Netns&,
                                        const redirect::PodRedirectConfig&) const override {
    ++verifies;
    return redirect::VerifyReport{.complete = true};
  }
  Result<> remove(const netns::Netns&, const redirect::PodRedirectConfig&) override {
    ++removes;
    return {};
  }
  std::atomic<int> installs{0}, removes{0};
  mutable std::atomic<int> verifies{0};
};

// The node's probe set as (IP, pod UID) entries. The agent serialises its
// calls into the host side (the real one's libraries are not thread-safe),
// so this needs no lock of its own.
class RecordingHost : public redirect::HostRedirect {
 public:
  std::string_view name() const override { return "recording"; }
  Result<> install_rules(const redirect::HostProbeConfig&) override { return {}; }
  Result<> remove_rules() override { return {}; }
  Result<> ensure_sets(bool) override { return {}; }
  Result<> flush_sets() override { return {}; }
  Result<> destroy_sets() override { return {}; }
  Result<> add_pod_ip(const IpAddress& ip, const std::string& uid) override {
    entries.emplace_back(ip.to_string(), uid);
    return {};
  }
  Result<> remove_pod_ip(const IpAddress& ip, const std::string& uid) override {
    std::erase(entries, std::pair(ip.to_string(), uid));
    return {};
  }
  Result<std::vector<redirect::ProbeSetEntry>> list_sets() override {
    return std::vector<redirect::ProbeSetEntry>{};
  }
  std::vector<std::pair<std::string, std::string>> entries;
};

}  // namespace ambient::test
