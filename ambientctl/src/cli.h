// ambientctl's command line: parses arguments, calls the agent's admin API
// (or, for `inspect --netns`, reads the kernel directly), prints, and
// returns the exit code (docs/ambientctl.md#exit-codes). main() only
// supplies the real streams.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace ambient::ctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitDrift = 1;        // verify found differences
inline constexpr int kExitError = 2;        // bad usage or input, unknown pod, an agent error
inline constexpr int kExitUnreachable = 3;  // no agent to ask, or it refused us

inline constexpr const char* kDefaultSocket = "/var/run/istio-cni/admin.sock";

struct Io {
  std::ostream& out;
  std::ostream& err;
  // The environment (AMBIENTCTL_SOCKET); injectable for tests.
  std::string socket_env;
};

int run(const std::vector<std::string>& args, Io& io);

}  // namespace ambient::ctl
