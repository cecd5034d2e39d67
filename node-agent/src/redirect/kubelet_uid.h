// Finding kubelet's UID for the host probe rule
// (docs/redirection.md#kubelet-uid): probes are SNATed only when kubelet's own
// sockets send them, not every host process's (`--socket-exists`,
// docs/field-lessons.md#p12).
#pragma once

#include <sys/types.h>

#include <string>

#include "lib/result.h"

namespace ambient::redirect {

// Scans <proc_root>/<pid> in numeric order; the first process that is
// kubelet wins: comm `kubelet` or `kubelite` (MicroK8s) with a command-line
// argument containing "kubelet" (any case), or comm `k3s` (no command-line
// check). Returns the real UID from the `Uid:` line of its status. Processes
// that vanish or cannot be read are skipped; finding none is a NotFound
// error naming the directory and what was looked for.
Result<uid_t> find_kubelet_uid(const std::string& proc_root);

}  // namespace ambient::redirect
