// A pod's sk_lookup link (docs/redirection.md#ebpf-time-wait): amb_tw_lookup
// attached to the pod's netns, which hands a SYN past a TIME_WAIT to
// ztunnel. tc passes such SYNs, so the link must be there whenever the tc
// programs are, agent running or not: it is pinned in bpffs, where it
// outlives the agent, and unpinned when the pod's redirection is removed.
// A netns link does not keep its netns alive: when the pod's netns goes the
// pinned link goes defunct and is swept.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "lib/result.h"
#include "netns/netns.h"
#include "redirect/ebpf/programs.h"

namespace ambient::redirect::ebpf {

// Where the link of the netns with inode `netns_ino` is pinned in `dir`.
std::string tw_link_path(const std::string& dir, ino_t netns_ino);

// Whether `dir`'s nearest existing ancestor is on a bpffs, the only place
// a link can be pinned; an error says what is there instead.
Result<> check_pin_root(const std::string& dir);

// mkdir -p under the pin root, each level 0700: only the agent reads its pins.
Result<> make_pin_dirs(const std::string& dir);

// Whether a program (by id) attached where `prog` is wanted may stay: an
// earlier agent's that does exactly what this one's would.
using AdoptLink = std::function<bool(uint32_t)>;

// Makes the pin hold a live link of `prog` in `ns`: created and pinned when
// missing (or when the pinned one is defunct or of another netns), the
// program replaced in place when it is another one (no moment without a
// link).
Result<> ensure_tw_link(const std::string& dir, const netns::Netns& ns, const LoadedProgram& prog,
                        const AdoptLink& adopt);

// What is wrong with `ns`'s link, or nullopt.
Result<std::optional<std::string>> tw_link_problem(const std::string& dir, const netns::Netns& ns,
                                                   const LoadedProgram& prog,
                                                   const AdoptLink& adopt);

// Unpins `ns`'s link; the kernel detaches it with the last reference.
// Nothing pinned is not an error.
Result<> remove_tw_link(const std::string& dir, const netns::Netns& ns);

// Unpins every link in `dir` whose netns is gone, and drops the rules
// markers of those netns (and of netns with no link); how many links.
Result<size_t> sweep_defunct_tw_links(const std::string& dir);

// A pod moved to the netfilter rules (docs/redirection.md#ebpf-fallback) is
// marked by a directory next to its link, which stays pinned: the marker
// outlives the agent as the link does, and goes with it when the netns goes.
std::string rules_marker_path(const std::string& dir, ino_t netns_ino);
bool has_rules_marker(const std::string& dir, const netns::Netns& ns);
Result<> add_rules_marker(const std::string& dir, const netns::Netns& ns);
Result<> remove_rules_marker(const std::string& dir, const netns::Netns& ns);
// How many pods are marked (a gauge: read at each scrape).
size_t count_rules_markers(const std::string& dir);

}  // namespace ambient::redirect::ebpf
