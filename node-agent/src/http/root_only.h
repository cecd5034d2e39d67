// The peer check of the agent's Unix sockets (docs/node-agent.md#cni-endpoint):
// only root, or the agent's own user, may talk to them.
#pragma once

#include <optional>
#include <string>

#include "http/server.h"

namespace ambient::http {

// An Options::admit for the socket named `socket_name` (in log lines and
// the refusal). The plugin runs as root (the container runtime's user), so
// a connection from any other user is refused with 403 before its request
// is read, as is one whose peer cannot be identified. The agent's own user
// is allowed too, for an agent that runs unprivileged in a test.
std::function<std::optional<Response>(int fd)> root_only(std::string socket_name);

}  // namespace ambient::http
