// docs/reliability.md#churn: pods come and go for a few hundred cycles on
// every backend; nothing of theirs may stay behind, and the agent may not
// grow. `ambient-bench churn` runs the same for 1,000 cycles and prints
// the figures.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>

#include "lib/text.h"
#include "support/backends.h"
#include "support/churn.h"
#include "support/sim_node.h"

using namespace ambient::test;

TEST_CASE("pod churn leaves no state behind and does not grow the agent", "[e2e][churn]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  const char* env = std::getenv("AMBIENT_CHURN_CYCLES");
  const int cycles = env ? std::atoi(env) : 200;
  SimNode node(opts);
  const ChurnResult r = churn(node, cycles);
  INFO("fds " << r.warm.fds << " -> " << r.end.fds << ", threads " << r.warm.threads << " -> "
              << r.end.threads << ", RSS " << r.warm.rss_kib << " -> " << r.end.rss_kib << " KiB");
  CHECK(r.leftover_pod_state == 0);
  CHECK(r.leftover_host_entries == 0);
  CHECK(r.leftover_workloads == 0);
  std::string names;
  for (const auto& f : r.leftover_links) names += " pinned:" + f;
  for (const auto& f : r.new_run_files) names += " run-dir:" + f;
  INFO("left:" << names);
  CHECK(r.leftover_links.empty());
  CHECK(r.new_run_files.empty());
  // Every netns and socket the agent opened for a pod is closed again.
  INFO("fds the agent gained: " << ambient::text::join(r.leaked_fds, " "));
  CHECK(r.leaked_fds.empty());
  // The netns workers are a pool made on demand (docs/node-agent.md): one
  // more may exist when a self-check overlapped a cycle, never one per pod.
  CHECK(r.end.threads <= r.warm.threads + 2);
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  // A sanitizer's shadow memory and report state grow with the work done:
  // the agent's own growth is measured in the plain build only.
  SUCCEED("RSS not checked in a sanitizer build");
#else
  CHECK(r.end.rss_kib - r.warm.rss_kib < 1024);
#endif
}
