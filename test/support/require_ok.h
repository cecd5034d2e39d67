// AMBIENT_REQUIRE_OK(expr): REQUIRE that a Result holds a value, with the
// error's description in the failure message.
#pragma once

#include <catch2/catch.hpp>
#include <string>

// `expr` may name a Result (it is not copied) or make one.
#define AMBIENT_REQUIRE_OK(expr)                                        \
  do {                                                                  \
    auto&& ambient_r_ = (expr);                                         \
    INFO((ambient_r_ ? std::string() : ambient_r_.error().describe())); \
    REQUIRE(ambient_r_);                                                \
  } while (0)
