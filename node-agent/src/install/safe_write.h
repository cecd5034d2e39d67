// Files and directories the agent writes on the node (the plugin binary,
// its kubeconfig, the CNI config, the run dir) are written without
// following a symlink at any step that names them
// (docs/node-agent.md#socket-security): the directory is opened O_NOFOLLOW
// and everything happens relative to that fd, so a link planted in place
// of the directory or of the file never redirects a write of ours.
#pragma once

#include <sys/types.h>

#include <string>

#include "lib/result.h"

namespace ambient::install {

// Replaces `path` with `content` (mode `mode`): a temp file in the same
// directory, fsync, rename. Readers see the old or the new file, never half
// of one; a symlink at `path` is replaced, never followed. A symlink in
// place of the directory itself is refused.
Result<> write_atomic(const std::string& path, const std::string& content, mode_t mode);

// The agent's run dir (sockets, the plugin's kubeconfig, standalone state):
// created 0750 as upstream does; one that exists and is ours is tightened
// to at most 0750; one owned by another user is left as it is, with a
// warning (it may be shared with other tools). A symlink or a file in its
// place is refused.
Result<> prepare_run_dir(const std::string& dir);

}  // namespace ambient::install
