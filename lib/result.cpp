#include "lib/result.h"

#include <cerrno>
#include <cstring>

namespace ambient {
namespace {

class Category : public std::error_category {
 public:
  const char* name() const noexcept override { return "ambient"; }
  std::string message(int c) const override {
    switch (static_cast<Errc>(c)) {
      case Errc::Ok:
        return "ok";
      case Errc::InvalidArgument:
        return "invalid argument";
      case Errc::NotFound:
        return "not found";
      case Errc::Unavailable:
        return "unavailable";
      case Errc::Timeout:
        return "timed out";
      case Errc::Internal:
        return "internal error";
    }
    return "unknown";
  }
};

}  // namespace

const std::error_category& ambient_category() {
  static const Category c;
  return c;
}

std::string Error::describe() const {
  std::string out;
  for (auto it = frames.rbegin(); it != frames.rend(); ++it) {
    out += *it;
    out += ": ";
  }
  out += message;
  return out;
}

Error make_error(Errc code, std::string message) {
  return Error{.code = make_error_code(code), .message = std::move(message)};
}

Error sys_error(std::string step) { return sys_error(std::move(step), errno); }

Error sys_error(std::string step, int err) {
  return Error{.code = std::error_code(err, std::system_category()),
               .message = std::move(step) + ": " + std::strerror(err)};
}

}  // namespace ambient
