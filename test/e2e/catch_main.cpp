// e2e tier: needs root (network namespaces, iptables). Without it the tier
// reports "skipped" (exit 77) instead of passing vacuously.
#define CATCH_CONFIG_RUNNER
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>

int main(int argc, char** argv) {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "e2e tests need root (network namespaces, iptables): skipped\n");
    return 77;
  }
  ::signal(SIGPIPE, SIG_IGN);
  return Catch::Session().run(argc, argv);
}
