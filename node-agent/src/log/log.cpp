#include "log/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace ambient::log {

void init(std::string_view level) {
  auto logger = spdlog::stdout_logger_mt("cni-agent");
  // 2024-01-01T00:00:00.123456Z<TAB>info<TAB>cni-agent<TAB>message
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ\t%l\t%n\t%v", spdlog::pattern_time_type::utc);
  logger->set_level(spdlog::level::from_str(std::string(level)));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

}  // namespace ambient::log
