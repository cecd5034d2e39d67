// The plugin's lines as the agent takes them from log.sock and writes them
// again under the cni-plugin scope (docs/node-agent.md#plugin-logs).
#include <spdlog/sinks/ostream_sink.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sstream>

#include "log/log.h"
#include "log/plugin_log.h"

using namespace ambient;
using log::Level;
using nlohmann::json;

namespace {

// What the agent writes while it lives; the loggers go back to stdout after.
class Captured {
 public:
  Captured(const log::Levels& levels, bool as_json)
      : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)) {
    log::init(levels, as_json, sink_);
  }
  ~Captured() { log::init(log::Levels{}, false); }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  spdlog::sink_ptr sink_;
};

http::Response post_log(const json& lines) {
  return log::handle_plugin_log({"POST", "/log", lines.dump()});
}

const char* kLine =
    R"({"level":"info","time":"2024-01-01T00:00:00.356374Z","msg":"pod enrolled","pod":"demo/web-1","attempt":2})"
    "\n";

}  // namespace

TEST_CASE("plugin log: RFC 3339 times, to the microsecond, in UTC", "[log][plugin-log]") {
  auto utc = [](std::string_view s) {
    auto t = log::parse_rfc3339(s);
    REQUIRE(t);
    return log::format_time(*t);
  };
  CHECK(utc("2024-01-01T00:00:00.356374Z") == "2024-01-01T00:00:00.356374Z");
  CHECK(utc("2024-01-01T00:00:00Z") == "2024-01-01T00:00:00.000000Z");
  CHECK(utc("2024-01-01T00:00:00.5Z") == "2024-01-01T00:00:00.500000Z");
  CHECK(utc("2024-01-01T00:00:00.123456789Z") == "2024-01-01T00:00:00.123456Z");
  CHECK(utc("2024-01-01T02:30:00.000001+02:30") == "2024-01-01T00:00:00.000001Z");
  CHECK(utc("2023-12-31T23:00:00-01:00") == "2024-01-01T00:00:00.000000Z");
  for (const char* bad :
       {"", "2024-01-01", "2024-01-01T00:00:00", "2024-01-01 00:00:00Z", "2024-13-01T00:00:00Z",
        "2024-02-30T00:00:00Z", "2024-01-01T24:00:00Z", "2024-01-01T00:00:00.Z",
        "2024-01-01T00:00:00+0200", "2024-01-01T00:00:00Zjunk", "yesterday"}) {
    INFO(bad);
    auto t = log::parse_rfc3339(bad);
    REQUIRE_FALSE(t);
    CHECK_THAT(t.error().describe(), Catch::Contains("is not RFC 3339"));
  }
}

TEST_CASE("plugin log: a line keeps its time, level and message; other keys are labels",
          "[log][plugin-log]") {
  auto line = log::parse_plugin_line(kLine);
  REQUIRE(line);
  REQUIRE(line->has_value());
  const log::PluginLine& l = **line;
  CHECK(log::format_time(l.time) == "2024-01-01T00:00:00.356374Z");
  CHECK(l.level == Level::Info);
  CHECK(l.msg == "pod enrolled");
  REQUIRE(l.labels.size() == 2);
  CHECK(l.labels[0].key == "pod");
  CHECK(l.labels[0].text == "demo/web-1");
  CHECK(l.labels[0].json == "\"demo/web-1\"");
  CHECK(l.labels[1].key == "attempt");
  CHECK(l.labels[1].text == "2");
  CHECK(l.labels[1].json == "2");
  // The line's own scope gives way to cni-plugin's.
  auto scoped = log::parse_plugin_line(
      R"({"level":"warn","time":"2024-01-01T00:00:00Z","msg":"m","scope":"ambient"})");
  REQUIRE(scoped);
  REQUIRE(scoped->has_value());
  CHECK((*scoped)->labels.empty());
}

TEST_CASE("plugin log: fatal and unknown levels are dropped; malformed lines are errors",
          "[log][plugin-log]") {
  for (const char* level : {"fatal", "panic", "trace", "INFO", ""}) {
    INFO(level);
    auto l = log::parse_plugin_line(
        json{{"level", level}, {"time", "2024-01-01T00:00:00Z"}, {"msg", "m"}}.dump());
    REQUIRE(l);
    CHECK_FALSE(l->has_value());
  }
  auto [line, problem] = GENERATE(table<std::string, std::string>({
      {R"({"level":"info","time":"2024-01-01T00:00:00Z"})", "no msg"},
      {R"({"level":"info","msg":"m"})", "no time"},
      {R"({"time":"2024-01-01T00:00:00Z","msg":"m"})", "no level"},
      {R"({"level":"info","time":"yesterday","msg":"m"})", "is not RFC 3339"},
      {R"({"level":"info","time":"2024-01-01T00:00:00Z","msg":7})", "msg is a number"},
      {R"(["not","an","object"])", "not a JSON object"},
      {R"({"level":"info",)", "not a JSON object"},
  }));
  INFO(line);
  auto l = log::parse_plugin_line(line);
  REQUIRE_FALSE(l);
  CHECK_THAT(l.error().describe(), Catch::Contains(problem));
}

TEST_CASE("plugin log: a request's good lines are kept in order, the rest counted",
          "[log][plugin-log]") {
  auto batch = log::parse_plugin_log(
      json::array(
          {kLine, R"({"level":"info","msg":"no time"})", 42,
           R"({"level":"fatal","time":"2024-01-01T00:00:00Z","msg":"dropped, not malformed"})",
           R"({"level":"error","time":"2024-01-01T00:00:01Z","msg":"second"})"})
          .dump());
  REQUIRE(batch.lines.size() == 2);
  CHECK(batch.lines[0].msg == "pod enrolled");
  CHECK(batch.lines[1].msg == "second");
  CHECK(batch.malformed == 2);
  CHECK(batch.first_problem == "line 2: no time");
  for (const char* body : {"", "{}", "not json", R"({"lines":[]})"}) {
    INFO(body);
    auto b = log::parse_plugin_log(body);
    CHECK(b.lines.empty());
    CHECK(b.malformed == 1);
  }
  CHECK(log::parse_plugin_log("[]").malformed == 0);
}

TEST_CASE("plugin log: lines are written under cni-plugin with their own time and labels",
          "[log][plugin-log]") {
  SECTION("text: labels after a tab, as Istio writes them") {
    Captured cap(log::Levels{}, false);
    auto r = post_log(json::array({kLine}));
    CHECK(r.status == 200);
    CHECK(r.body.empty());
    CHECK(
        cap.text() ==
        "2024-01-01T00:00:00.356374Z\tinfo\tcni-plugin\tpod enrolled\tpod=demo/web-1 attempt=2\n");
  }
  SECTION("JSON: labels as keys, values keep their type") {
    Captured cap(log::Levels{}, true);
    post_log(json::array({kLine}));
    const json j = json::parse(cap.text());
    CHECK(j == json{{"time", "2024-01-01T00:00:00.356374Z"},
                    {"level", "info"},
                    {"scope", "cni-plugin"},
                    {"msg", "pod enrolled"},
                    {"pod", "demo/web-1"},
                    {"attempt", 2}});
  }
  SECTION("the cni-plugin scope's level filters them, and only them") {
    Captured cap(log::Levels{.agent = Level::Debug, .plugin = Level::Warn}, false);
    post_log(
        json::array({kLine, R"({"level":"warn","time":"2024-01-01T00:00:02Z","msg":"slow"})"}));
    CHECK_THAT(cap.text(),
               !Catch::Contains("pod enrolled") && Catch::Contains("\twarn\tcni-plugin\tslow\n"));
  }
  SECTION("malformed lines: one cni-agent warning per request, the good ones still written") {
    Captured cap(log::Levels{}, false);
    auto r = post_log(json::array({"{", kLine, R"({"msg":"m"})"}));
    CHECK(r.status == 200);
    CHECK(r.body.empty());
    const std::string out = cap.text();
    CHECK_THAT(out, Catch::Contains("\tcni-plugin\tpod enrolled"));
    CHECK_THAT(out, Catch::Contains("\twarn\tcni-agent\tlog.sock: skipped 2 malformed plugin "
                                    "log line(s); line 1: not a JSON object"));
    CHECK(std::count(out.begin(), out.end(), '\n') == 2);
  }
  SECTION("a body that is not an array is answered 200 all the same") {
    Captured cap(log::Levels{}, false);
    auto r = log::handle_plugin_log({"POST", "/log", "garbage"});
    CHECK(r.status == 200);
    CHECK(r.body.empty());
    CHECK_THAT(cap.text(), Catch::Contains("the body is not a JSON array of strings"));
  }
  SECTION("another path is 404, and nothing is written") {
    Captured cap(log::Levels{}, false);
    auto r = log::handle_plugin_log({"POST", "/logs", json::array({kLine}).dump()});
    CHECK(r.status == 404);
    CHECK(cap.text().empty());
  }
}
