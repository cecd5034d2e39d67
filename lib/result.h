// Result<T>: the error type used across ambient-cni instead of exceptions.
//
// Errors are the normal path here (kernel, netns and IO failures), they must
// cross worker threads and C callbacks, and every failure must roll back
// half-installed state, so they are explicit values. Member names follow
// std::expected so a later switch is mechanical.
#pragma once

#include <string>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

namespace ambient {

enum class Errc {
  Ok = 0,
  InvalidArgument,  // bad input from a caller: maps to HTTP 400 / CNI 6,7
  NotFound,
  Unavailable,  // a peer (agent, ztunnel) is not there: retry later
  Timeout,
  Internal,
};

const std::error_category& ambient_category();
inline std::error_code make_error_code(Errc e) { return {static_cast<int>(e), ambient_category()}; }

struct Error {
  std::error_code code;
  std::string message;              // innermost step, e.g. "setns(/proc/42/ns/net): EPERM"
  std::vector<std::string> frames;  // outer steps, inner first
  bool retryable = true;

  // "pod default/web-1: install iptables: setns(...): ..." (outermost first).
  std::string describe() const;
  // Appends an outer step ("failed to load args") and returns the error,
  // as Result::context does.
  Error&& context(std::string frame) && {
    frames.push_back(std::move(frame));
    return std::move(*this);
  }
};

Error make_error(Errc code, std::string message);
// Reads errno at the call: "step: strerror(errno)".
Error sys_error(std::string step);
Error sys_error(std::string step, int err);

template <class T = void>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit like std::expected
  Result(Error e) : v_(std::move(e)) {}      // NOLINT

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }
  template <class U>
  T value_or(U&& other) const& {
    return has_value() ? value() : static_cast<T>(std::forward<U>(other));
  }
  // Appends an outer step to the error; no-op on success.
  Result&& context(std::string frame) && {
    if (!has_value()) std::get<1>(v_).frames.push_back(std::move(frame));
    return std::move(*this);
  }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error e) : e_(std::move(e)), ok_(false) {}  // NOLINT

  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const& { return e_; }
  Error&& error() && { return std::move(e_); }
  Result&& context(std::string frame) && {
    if (!ok_) e_.frames.push_back(std::move(frame));
    return std::move(*this);
  }

 private:
  Error e_;
  bool ok_ = true;
};

}  // namespace ambient

template <>
struct std::is_error_code_enum<ambient::Errc> : true_type {};

#define AMBIENT_CONCAT_INNER(a, b) a##b
#define AMBIENT_CONCAT(a, b) AMBIENT_CONCAT_INNER(a, b)

#define AMBIENT_RETURN_IF_ERROR(expr)                                \
  do {                                                               \
    auto ambient_status_ = (expr);                                   \
    if (!ambient_status_) return std::move(ambient_status_).error(); \
  } while (0)

// NOLINTBEGIN(bugprone-macro-parentheses): tmp and lhs are declarators ("Route r")
#define AMBIENT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp) return std::move(tmp).error();            \
  lhs = std::move(tmp).value()
// NOLINTEND(bugprone-macro-parentheses)

#define AMBIENT_ASSIGN_OR_RETURN(lhs, expr) \
  AMBIENT_ASSIGN_OR_RETURN_IMPL(AMBIENT_CONCAT(ambient_result_, __LINE__), lhs, expr)
