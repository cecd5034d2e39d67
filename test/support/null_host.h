// A host side that does nothing and always succeeds, for tests of the
// agent's pipeline that are not about the node's probe sets or SNAT.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "redirect/host.h"

namespace ambient::test {

class NullHost : public redirect::HostRedirect {
 public:
  std::string_view name() const override { return "null"; }
  Result<> install_rules(const redirect::HostProbeConfig&) override { return {}; }
  Result<> remove_rules() override { return {}; }
  Result<> ensure_sets(bool) override { return {}; }
  Result<> flush_sets() override { return {}; }
  Result<> destroy_sets() override { return {}; }
  Result<> add_pod_ip(const IpAddress&, const std::string&) override { return {}; }
  Result<> remove_pod_ip(const IpAddress&, const std::string&) override { return {}; }
  Result<std::vector<redirect::ProbeSetEntry>> list_sets() override {
    return std::vector<redirect::ProbeSetEntry>{};
  }
};

}  // namespace ambient::test
