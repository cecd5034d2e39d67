// Per rule set, what a pod holding exactly those rules looks like (its
// rules' fingerprint, a rendering), made once and kept: a backend makes it
// by applying its own rules in a scratch netns (netns::run_in_new_netns)
// and reading them back, then compares pods with it instead of reading
// each pod's rules in full.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "lib/result.h"

namespace ambient::redirect {

template <typename T>
class ReferenceCache {
 public:
  // `key` names the rule set (e.g. the rules' own text); `make` runs at
  // most once per key at a time: the pods adopted together at a restart
  // all want the first reference at once, and one is enough.
  Result<std::shared_ptr<const T>> get(const std::string& key,
                                       const std::function<Result<T>()>& make) {
    if (auto ref = find(key)) return ref;
    std::lock_guard making(make_mu_);
    if (auto ref = find(key)) return ref;
    AMBIENT_ASSIGN_OR_RETURN(T made, make());
    auto ref = std::make_shared<const T>(std::move(made));
    std::lock_guard lk(mu_);
    made_.emplace(key, ref);
    return ref;
  }

 private:
  std::shared_ptr<const T> find(const std::string& key) {
    std::lock_guard lk(mu_);
    auto it = made_.find(key);
    return it == made_.end() ? nullptr : it->second;
  }

  std::mutex mu_, make_mu_;
  std::map<std::string, std::shared_ptr<const T>> made_;
};

}  // namespace ambient::redirect
