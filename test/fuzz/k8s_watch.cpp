// What the API server sends the agent's informers: the first line as a
// list body, every line as one watch event (objects, bookmarks, Status
// bodies, ERROR events), and each object through what the agent reads of
// pods, namespaces, nodes and DaemonSets.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "k8s/node_affinity.h"
#include "k8s/watch_event.h"
#include "lib/k8s/enablement.h"

using namespace ambient;
using namespace ambient::k8s;

namespace {

void read_object(const json::Json& obj) {
  static const auto selectors = default_enablement_selectors();
  (void)meta_string(obj, "namespace");
  (void)meta_string(obj, "resourceVersion");
  (void)labels_of(obj);
  (void)annotations_of(obj);
  (void)pod_is_terminal(obj);
  (void)pod_matches(obj, obj, selectors);
  (void)daemonset_targets_node(obj, obj);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  bool first = true;
  while (!in.empty()) {
    const size_t nl = in.find('\n');
    const std::string_view line = in.substr(0, nl);
    in = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
    if (first) {
      first = false;
      if (auto list = parse_list_body(line)) {
        for (const auto& item : list->items) read_object(item);
      }
    }
    WatchLine w = parse_watch_line(line);
    if (w.object) read_object(*w.object);
  }
  return 0;
}
