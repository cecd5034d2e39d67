// Pod churn on one node (docs/reliability.md#churn): pods enrolled, used and
// deleted one after another, with the agent's resources and the node's state
// compared against a baseline taken after a warm-up. Shared by the e2e test
// (a few hundred cycles per backend) and `ambient-bench churn` (1,000).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "netns/netns.h"
#include "support/sim_node.h"

namespace ambient::test {

// What the agent process holds, from /proc.
struct AgentUsage {
  size_t fds = 0, threads = 0;
  long rss_kib = 0;
  double cpu_s = 0;  // user + system time so far
};

inline AgentUsage agent_usage(pid_t pid) {
  namespace fs = std::filesystem;
  AgentUsage u;
  const std::string proc = "/proc/" + std::to_string(pid);
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(proc + "/fd")) ++u.fds;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(proc + "/task")) ++u.threads;
  std::ifstream stat(proc + "/stat");
  const std::string text{std::istreambuf_iterator<char>(stat), {}};
  std::istringstream fields(text.substr(text.rfind(')') + 2));  // after "pid (comm) "
  std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
  if (f.size() > 12) {  // utime and stime, fields 14 and 15 counted from pid
    u.cpu_s = (std::stod(f[11]) + std::stod(f[12])) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  std::ifstream status(proc + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) u.rss_kib = std::stol(line.substr(6));
  }
  return u;
}

// What each of the agent's fds refers to ("socket:[123]", "net:[4026…]", a
// path), so a leak is reported by what leaked rather than as a count.
inline std::multiset<std::string> agent_fd_targets(pid_t pid) {
  namespace fs = std::filesystem;
  std::multiset<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    const fs::path target = fs::read_symlink(e.path(), ec);
    out.insert(ec ? std::string("?") : target.string());
  }
  return out;
}

// Those of `after` that `before` did not have.
inline std::vector<std::string> added_fds(const std::multiset<std::string>& before,
                                          const std::multiset<std::string>& after) {
  std::vector<std::string> out;
  std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                      std::back_inserter(out));
  return out;
}

// Of the fds in `after` and not in `before` (agent_fd_targets), those that
// are a leak. A netns worker keeps the sandbox mount namespace its
// iptables commands run in for as long as it lives, made at its first such
// command (docs/redirection.md#sandbox); workers are made on demand, at
// most kMaxNetnsWorkers. So `mnt:` fds may come while there are no more
// than that many in all; any other fd more is a leak.
inline std::vector<std::string> leaked_fds(const std::multiset<std::string>& before,
                                           const std::multiset<std::string>& after) {
  const auto is_mnt = [](const std::string& target) { return target.rfind("mnt:", 0) == 0; };
  const auto mnt_after = static_cast<size_t>(std::count_if(after.begin(), after.end(), is_mnt));
  std::vector<std::string> out;
  for (auto& fd : added_fds(before, after)) {
    if (!is_mnt(fd) || mnt_after > netns::kMaxNetnsWorkers) out.push_back(std::move(fd));
  }
  return out;
}

inline std::set<std::string> files_under(const std::string& dir) {
  namespace fs = std::filesystem;
  std::set<std::string> out;
  if (dir.empty() || !fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_directory()) out.insert(fs::relative(e.path(), dir).string());
  }
  return out;
}

struct ChurnResult {
  int cycles = 0;
  AgentUsage warm, end;
  std::vector<std::string> leaked_fds;   // what each fd the agent gained refers to
  size_t leftover_pod_state = 0;         // deleted pods that still had rules, filters or routes
  size_t leftover_host_entries = 0;      // churned pods' UIDs still in the node's rules or sets
  size_t leftover_workloads = 0;         // churned pods ztunnel still has
  std::set<std::string> leftover_links;  // pinned sk_lookup links left (eBPF)
  std::set<std::string> new_run_files;   // in the agent's run dir
  double seconds = 0;
};

// `cycles` pods, one at a time: ADD, a connection through it (captured by
// ztunnel), DEL, then the pod's netns goes. The first `warmup` cycles set
// the baseline; every `check_every`-th deleted pod is searched for state of
// ours before its netns goes. `cycles` must be more than `warmup`.
inline ChurnResult churn(SimNode& node, int cycles, int warmup = 20, int check_every = 10) {
  ChurnResult r;
  r.cycles = cycles;
  Pod target = node.must_add_pod("churn-target", "plain");
  std::set<std::string> run_files_before;
  std::multiset<std::string> fds_warm;
  // Both measurements after the agent settles: ztunnel's Del acks, the
  // plugins' log connections, libnftables contexts freed a moment after use.
  const auto settle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(500)); };
  std::set<std::string> uids;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < cycles; ++i) {
    if (i == warmup) {
      settle();
      r.warm = agent_usage(node.agent_pid());
      fds_warm = agent_fd_targets(node.agent_pid());
      run_files_before = files_under(node.dir() + "/run");
    }
    Pod p = node.must_add_pod("churn-" + std::to_string(i), "ambient-demo");
    uids.insert(p.uid);
    const std::string reply = in_pod_tcp(p, target.ip, 8080);
    if (reply.find("port=15001") == std::string::npos) {
      FAIL("cycle " << i << ": not captured: " << reply);
    }
    AddResult del = node.del_pod(p);
    if (!del.ok) FAIL("cycle " << i << ": DEL failed: " << del.stderr_text);
    if (i % check_every == 0 && node.pod_has_our_rules(p)) ++r.leftover_pod_state;
    node.forget_pod(p);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  settle();
  r.end = agent_usage(node.agent_pid());
  r.leaked_fds = leaked_fds(fds_warm, agent_fd_targets(node.agent_pid()));
  const std::string host = node.node_exec({"nft", "list", "ruleset"}) +
                           node.node_exec({"ipset", "list"}) +
                           node.node_exec({"iptables-legacy-save"});
  for (const auto& uid : uids) r.leftover_host_entries += host.find(uid) != std::string::npos;
  const auto workloads = node.ztunnel_state()["workloads"];
  for (const auto& uid : uids) r.leftover_workloads += workloads.contains(uid);
  // Ours only: the root of a bpffs has the kernel's own debug files. The
  // agent's pinned program instances belong to no pod
  // (docs/redirection.md#ebpf-loading).
  if (!node.bpf_pin_dir().empty()) {
    for (const auto& f : files_under(node.bpf_pin_dir() + "/ambient")) {
      if (f.find("/prog-") == std::string::npos) r.leftover_links.insert(f);
    }
  }
  for (const auto& f : files_under(node.dir() + "/run")) {
    if (!run_files_before.contains(f)) r.new_run_files.insert(f);
  }
  return r;
}

}  // namespace ambient::test
