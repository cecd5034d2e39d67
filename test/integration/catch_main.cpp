// integration tier: real kernel objects in namespaces the test creates
// (needs CAP_NET_ADMIN and CAP_SYS_ADMIN). Without them: skipped (77).
#define CATCH_CONFIG_RUNNER
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <thread>

int main(int argc, char** argv) {
  bool can = false;
  std::thread probe([&] { can = ::unshare(CLONE_NEWNET) == 0; });
  probe.join();
  if (!can) {
    std::fprintf(stderr, "integration tests need CAP_NET_ADMIN/CAP_SYS_ADMIN: skipped\n");
    return 77;
  }
  ::signal(SIGPIPE, SIG_IGN);
  return Catch::Session().run(argc, argv);
}
