// The API server's list and watch bodies as the informers read them. Each
// body here once stopped the agent (an exception thrown on the informer's
// thread); test/fuzz/k8s_watch found them.
#include <catch2/catch.hpp>

#include "k8s/watch_event.h"

using namespace ambient;
using namespace ambient::k8s;

TEST_CASE("a list body without metadata or with metadata of the wrong type is read, version empty",
          "[k8s][fuzz]") {
  const std::string body = GENERATE(
      as<std::string>{}, R"({"items":[]})", R"({"items":[],"metadata":null})",
      R"({"items":[],"metadata":[1]})", R"({"items":[],"metadata":{"resourceVersion":7}})");
  INFO(body);
  auto list = parse_list_body(body);
  REQUIRE(list);
  CHECK(list->items.empty());
  CHECK(list->resource_version.empty());
}

TEST_CASE("a list body keeps its items and its version", "[k8s]") {
  auto list = parse_list_body(
      R"({"metadata":{"resourceVersion":"100"},"items":[{"metadata":{"name":"a"}},{}]})");
  REQUIRE(list);
  CHECK(list->items.size() == 2);
  CHECK(list->resource_version == "100");
  CHECK_FALSE(parse_list_body(R"({"items":{}})"));
  CHECK_FALSE(parse_list_body("not json"));
}

TEST_CASE("watch lines with fields of the wrong type end the watch or are skipped, never throw",
          "[k8s][fuzz]") {
  SECTION("a Status body whose code or message is not what it should be") {
    for (const char* line : {R"({"kind":"Status","code":"410","message":5})",
                             R"({"kind":"Status","code":410.5})", R"({"kind":"Status"})"}) {
      INFO(line);
      WatchLine w = parse_watch_line(line);
      CHECK(w.kind == WatchLine::Kind::Failure);
      CHECK_FALSE(w.gone);
      CHECK(w.failure == "watch failed");
    }
  }
  SECTION("an ERROR event whose object is not an object") {
    for (const char* line :
         {R"({"type":"ERROR","object":null})", R"({"type":"ERROR","object":"x"})",
          R"({"type":"ERROR","object":{"code":[410],"message":{}}})"}) {
      INFO(line);
      WatchLine w = parse_watch_line(line);
      CHECK(w.kind == WatchLine::Kind::Failure);
      CHECK_FALSE(w.gone);
      CHECK(w.failure == "watch error");
    }
  }
  SECTION("kind or type that is not a string") {
    WatchLine w = parse_watch_line(R"({"kind":1,"type":["ADDED"],"object":{}})");
    CHECK(w.kind == WatchLine::Kind::Object);
    CHECK(w.type.empty());  // neither added, modified nor deleted: only the version may move
  }
}

TEST_CASE("watch lines as the API server sends them", "[k8s]") {
  WatchLine added = parse_watch_line(
      R"({"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"5"}}})");
  CHECK(added.kind == WatchLine::Kind::Object);
  CHECK(added.type == "ADDED");
  CHECK(added.resource_version == "5");
  REQUIRE(added.object);
  CHECK(meta_string(*added.object, "name") == "a");
  WatchLine gone =
      parse_watch_line(R"({"type":"ERROR","object":{"code":410,"message":"too old"}})");
  CHECK(gone.kind == WatchLine::Kind::Failure);
  CHECK(gone.gone);
  CHECK(gone.failure == "too old");
  WatchLine status = parse_watch_line(R"({"kind":"Status","code":410,"message":"expired"})");
  CHECK(status.gone);
  CHECK(status.failure == "expired");
  CHECK(parse_watch_line(R"({"type":"BOOKMARK"})").kind == WatchLine::Kind::Ignored);
  CHECK(parse_watch_line("[]").kind == WatchLine::Kind::Failure);
}
