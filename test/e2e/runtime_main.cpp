// runtime tier: containerd and runc drive the CNI chain through CRI. Where
// containerd cannot run (not root, not installed, no overlayfs) the tier
// reports "skipped" (exit 77) with the reason, instead of passing vacuously.
#define CATCH_CONFIG_RUNNER
#include <signal.h>

#include <catch2/catch.hpp>
#include <cstdio>

#include "support/containerd.h"

int main(int argc, char** argv) {
  const std::string missing = ambient::test::Containerd::missing_prerequisite();
  if (!missing.empty()) {
    std::fprintf(stderr, "runtime tests skipped: %s\n", missing.c_str());
    return 77;
  }
  ::signal(SIGPIPE, SIG_IGN);
  return Catch::Session().run(argc, argv);
}
