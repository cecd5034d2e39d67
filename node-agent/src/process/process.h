// Child processes (iptables-restore and friends). The child inherits the
// network namespace of the thread that forks it, which is how in-pod
// commands run inside the pod: fork from a run_in_netns() thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "lib/result.h"

namespace ambient {

struct CommandSpec {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH
  std::string stdin_data;
  // Extra "K=V" entries; the rest of the agent's environment is kept (upstream
  // replaced it all, dropping PATH).
  std::vector<std::string> env;
  // Run in a private mount namespace: /dev/null over /etc/nsswitch.conf (no
  // NSS lookups for -m owner, docs/field-lessons.md#p21) and a private tmpfs on /run, so
  // the xtables lock is ours alone and never the host's /run/xtables.lock
  // that kube-proxy holds (docs/field-lessons.md#p20). The namespace is made once per
  // calling thread and entered by each of its commands, so commands run at
  // the same time from different threads never share a lock.
  bool sandbox = false;
  std::chrono::milliseconds timeout{30000};
};

struct CommandResult {
  int exit_code = -1;  // -1: killed by a signal
  std::string out, err;
};

// Runs the command to completion (or kills it at the timeout). A non-zero
// exit is not an error here; failing to start or to wait is.
Result<CommandResult> run_command(const CommandSpec& spec);

// Convenience: run and turn a non-zero exit into an error carrying stderr.
Result<CommandResult> run_checked(const CommandSpec& spec);

// Commands started by this process so far (any thread): tests use it to
// show which paths avoid an exec.
uint64_t commands_started();

}  // namespace ambient
