// Crash points for the fault-injection tests: when the environment variable
// AMBIENT_CRASH_POINT_FOR_TEST names a point, the agent dies there at once
// (exit_group, no cleanup), as a kill -9 would leave it. Unset in production.
#pragma once

#include <string_view>

namespace ambient {

void crash_point_for_test(std::string_view point);

}  // namespace ambient
