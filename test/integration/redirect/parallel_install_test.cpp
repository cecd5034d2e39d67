// Two pods' installs at once (docs/performance.md#where-time-goes): no
// backend may hold a lock across a whole install, or a burst of ADDs would
// be enrolled one pod at a time. Each install's `routed` callback (inside
// the install, on its netns worker) waits for the other's: they meet only
// if both installs are under way at the same moment.
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "redirect/ebpf/backend.h"
#include "redirect/ebpf/programs.h"
#include "redirect/iptables/backend.h"
#include "redirect/nftables/backend.h"
#include "support/backends.h"
#include "support/bpffs.h"
#include "support/require_ok.h"
#include "support/test_netns.h"

using namespace ambient;
using namespace ambient::redirect;
using namespace ambient::test;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<RedirectBackend> make(const std::string& kind, const BpfFs& fs) {
  if (kind == kNftables) return std::make_unique<NftablesBackend>();
  if (kind == kEbpf) {
    auto programs = ebpf::Programs::load("", fs.path());
    AMBIENT_REQUIRE_OK(programs);
    return std::make_unique<EbpfBackend>(*programs);
  }
  return std::make_unique<IptablesBackend>(IptablesOptions{
      .variant = kind == kIptablesLegacy ? IptablesVariant::Legacy : IptablesVariant::Nft});
}

// Both parties arrive, or the wait times out.
class Meeting {
 public:
  bool arrive_and_wait(std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    ++arrived_;
    cv_.notify_all();
    return cv_.wait_for(lk, timeout, [&] { return arrived_ >= 2; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
};

}  // namespace

TEST_CASE("two pods' installs run at the same time on every backend", "[parallel]") {
  const std::string kind = GENERATE(from_range(kBackends));
  INFO("backend " << kind);
  BpfFs fs;
  auto backend = make(kind, fs);
  TestNetns a("amb-par-a-"), b("amb-par-b-");
  const PodRedirectConfig cfg{};
  // Opened here: Catch2's assertions (in ns()) belong to the test's thread.
  const netns::Netns& pod_a = a.ns();
  const netns::Netns& pod_b = b.ns();
  Meeting meeting;
  bool met[2] = {false, false};
  Result<> done[2];
  std::thread other([&] {
    done[1] = backend->install(pod_b, cfg, [&] { met[1] = meeting.arrive_and_wait(5s); });
  });
  done[0] = backend->install(pod_a, cfg, [&] { met[0] = meeting.arrive_and_wait(5s); });
  other.join();
  AMBIENT_REQUIRE_OK(done[0]);
  AMBIENT_REQUIRE_OK(done[1]);
  CHECK(met[0]);
  CHECK(met[1]);
  for (const TestNetns* ns : {&a, &b}) {
    auto v = backend->verify(ns->ns(), cfg);
    AMBIENT_REQUIRE_OK(v);
    CHECK(v->complete);
    AMBIENT_REQUIRE_OK(backend->remove(ns->ns(), cfg));
  }
}
