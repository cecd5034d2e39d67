// ambient-agent: parses the configuration, builds the app, runs it.
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <iostream>

#include "app/app.h"
#include "config/config.h"
#include "lib/version.h"
#include "log/log.h"
#include "process/fd_table.h"

namespace {

// Process-wide tuning that must happen before any thread exists.
void tune_process() {
  // Each enrolled pod holds a netns fd.
  ambient::reserve_fd_table(4096);
  // glibc gives each busy thread its own malloc arena (up to 8 per core),
  // and memory freed in one is not returned to the kernel nor reused by
  // another: after a burst of enrollments that held ~40 MiB of RSS. Our
  // threads mostly block in syscalls, so two arenas cost no contention.
  ::mallopt(M_ARENA_MAX, 2);
  // Fixed thresholds: glibc would otherwise raise both after the first big
  // block is freed (up to 32 MiB), and then keep up to twice that per arena
  // between enrollments. 4 MiB keeps libnftables' 2 MiB batch buffer, made
  // for every transaction, on the heap: mmap'd, its munmap costs a TLB
  // shootdown each time. The heap is trimmed once nft work pauses instead
  // (redirect/nftables/nft.cpp).
  ::mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
  ::mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
}

// Signals are taken synchronously on the main thread; every other thread
// inherits the block. SIGPIPE would kill us when a peer goes away mid-write.
sigset_t block_signals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  return sigs;
}

// Everything main does; main only adds the last-resort catch.
int run(int argc, char** argv) {
  using namespace ambient;
  tune_process();
  auto parsed = agent::parse_config(argc, argv, [](const char* n) { return std::getenv(n); });
  if (!parsed) {
    std::cerr << "ambient-agent: " << parsed.error().describe() << "\n";
    return 2;
  }
  if (parsed->help) {
    std::cout << agent::help_text();
    return 0;
  }
  if (parsed->version) {
    std::cout << "ambient-agent " << kVersion << "\n";
    return 0;
  }
  // Checked while parsing: it cannot fail here.
  log::init(log::parse_output_levels(parsed->config.log_level).value_or(log::Levels{}),
            parsed->config.log_as_json);
  log::info("ambient-agent starting (pid {})", ::getpid());
  const sigset_t signals = block_signals();
  auto app = app::App::build(parsed->config);
  if (!app) {
    log::error("{}", app.error().describe());
    return 1;
  }
  return (*app)->run(signals);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "ambient-agent: fatal: " << e.what() << "\n";
    return 1;
  }
}
