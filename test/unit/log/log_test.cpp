// The agent's log lines in Istio's formats, and --log_output_level in
// Istio's syntax (docs/node-agent.md#logging).
#include <spdlog/sinks/ostream_sink.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "config/config.h"
#include "log/log.h"

using namespace ambient;
using log::Level;

TEST_CASE("--log_output_level takes Istio's scope:level syntax", "[log]") {
  SECTION("upstream's default, default:info, leaves every scope at info") {
    auto l = log::parse_output_levels("default:info");
    REQUIRE(l);
    CHECK(l->agent == Level::Info);
    CHECK(l->plugin == Level::Info);
    CHECK(l->install == Level::Info);
  }
  SECTION("a bare level is the default scope's") {
    auto l = log::parse_output_levels("debug");
    REQUIRE(l);
    CHECK(l->agent == Level::Debug);
    CHECK(l->install == Level::Debug);
  }
  SECTION("a named scope wins over default, whatever the order") {
    auto l = log::parse_output_levels("cni-agent:debug,default:warn,cni-plugin:none");
    REQUIRE(l);
    CHECK(l->agent == Level::Debug);
    CHECK(l->plugin == Level::None);
    CHECK(l->install == Level::Warn);
  }
  SECTION("an unknown level or scope is an error naming it, never silence") {
    auto level = log::parse_output_levels("default:loud");
    REQUIRE_FALSE(level);
    CHECK_THAT(level.error().describe(), Catch::Contains("\"loud\""));
    auto scope = log::parse_output_levels("info,ztunnel-ish:debug");
    REQUIRE_FALSE(scope);
    CHECK_THAT(scope.error().describe(), Catch::Contains("\"ztunnel-ish\""));
  }
}

TEST_CASE("log lines: Istio's text columns, or one JSON object with upstream's keys", "[log]") {
  const char* time = "2026-12-06T05:00:00.123456Z";
  CHECK(log::format_line(time, Level::Warn, "cni-agent", "pod a/b: enrolled", false) ==
        "2026-12-06T05:00:00.123456Z\twarn\tcni-agent\tpod a/b: enrolled");
  const std::string line =
      log::format_line(time, Level::Error, "cni-agent", "bad \"body\"\n\tnext", true);
  auto j = nlohmann::json::parse(line);
  CHECK(j == nlohmann::json{{"time", time},
                            {"level", "error"},
                            {"scope", "cni-agent"},
                            {"msg", "bad \"body\"\n\tnext"}});
  CHECK(line.find('\n') == std::string::npos);  // one line per record
}

TEST_CASE("log times are UTC with microseconds", "[log]") {
  using namespace std::chrono;
  const auto when =
      sys_days{year{2026} / 12 / 6} + hours{5} + minutes{4} + seconds{3} + microseconds{120045};
  CHECK(log::format_time(time_point_cast<system_clock::duration>(when)) ==
        "2026-12-06T05:04:03.120045Z");
}

TEST_CASE("the agent refuses a log level it cannot honour at startup", "[log][config]") {
  const char* argv[] = {"ambient-agent", "--log_output_level=cni-agent:chatty", "--log_as_json"};
  auto env = [](const char* n) -> const char* {
    return std::string_view(n) == "AMBIENT_ENROLL_NAMESPACES" ? "*" : nullptr;
  };
  auto bad = agent::parse_config(3, argv, env);
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().describe(), Catch::Contains("--log_output_level"));
  const char* good[] = {"ambient-agent", "--log_output_level=default:info", "--log_as_json"};
  auto ok = agent::parse_config(3, good, env);
  REQUIRE(ok);
  CHECK(ok->config.log_as_json);
}

TEST_CASE("log lines: labels follow the message, as Istio writes them", "[log]") {
  const char* time = "2026-12-06T05:00:00.123456Z";
  const std::vector<log::Label> labels = {{"pod", "a/b", "\"a/b\""}, {"n", "2", "2"}};
  CHECK(log::format_line(time, Level::Info, "cni-plugin", "enrolled", false, labels) ==
        "2026-12-06T05:00:00.123456Z\tinfo\tcni-plugin\tenrolled\tpod=a/b n=2");
  CHECK(nlohmann::json::parse(log::format_line(time, Level::Info, "cni-plugin", "enrolled", true,
                                               labels)) == nlohmann::json{{"time", time},
                                                                          {"level", "info"},
                                                                          {"scope", "cni-plugin"},
                                                                          {"msg", "enrolled"},
                                                                          {"pod", "a/b"},
                                                                          {"n", 2}});
}

TEST_CASE("each scope is a logger of its own, with its own level and name in the line", "[log]") {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto levels = log::parse_output_levels("install:debug,cni-agent:warn");
  REQUIRE(levels);
  log::init(*levels, false, sink);
  log::info("agent info");
  log::warn("agent warn");
  log::install().debug("install debug {}", 1);
  log::install().info("install info");
  log::init(log::Levels{}, false);  // back to stdout for the other tests
  const std::string text = out.str();
  CHECK_THAT(text, !Catch::Contains("agent info"));
  CHECK_THAT(text, Catch::Contains("\twarn\tcni-agent\tagent warn\n"));
  CHECK_THAT(text, Catch::Contains("\tdebug\tinstall\tinstall debug 1\n"));
  CHECK_THAT(text, Catch::Contains("\tinfo\tinstall\tinstall info\n"));
  CHECK(&log::install() != &log::agent());
}
