// The API server's list and watch bodies as the informer reads them, apart
// from the transport so they can be tested and fuzzed on their own.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/json_fields.h"
#include "lib/result.h"

namespace ambient::k8s {

// metadata.<key> when it is a string, else "".
std::string meta_string(const json::Json& obj, const char* key);

// A list response: its items and the version to watch from.
struct ListBody {
  std::vector<json::Json> items;
  std::string resource_version;
};
// Errc::Internal "malformed list" when `body` is not a list.
Result<ListBody> parse_list_body(std::string_view body);

// One line of a watch stream.
struct WatchLine {
  enum class Kind {
    Object,   // ADDED, MODIFIED, DELETED, BOOKMARK or a type we do not know
    Ignored,  // no object: nothing to do, the stream goes on
    Failure,  // the watch ends (malformed line, Status body, ERROR event)
  };
  Kind kind = Kind::Ignored;
  std::string type;                          // Object: the event's type
  std::shared_ptr<const json::Json> object;  // Object: the event's object
  std::string resource_version;              // Object: where the stream now is ("" = unknown)
  bool gone = false;                         // Failure: the version expired (410)
  std::string failure;                       // Failure: why
};
WatchLine parse_watch_line(std::string_view line);

}  // namespace ambient::k8s
