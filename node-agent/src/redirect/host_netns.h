// Host-side work in the node's network namespace. With the chart's default
// the agent runs in a pod netns of its own, so the probe sets and the probe
// SNAT rule must be made in the node's netns (--host-netns) or kubelet's
// probes are never SNATed (docs/redirection.md#host-probe-snat). Every call
// runs on a netns worker that enters it; a thread that serves requests
// never changes namespace.
#pragma once

#include <functional>
#include <memory>

#include "netns/netns.h"
#include "redirect/host.h"

namespace ambient::redirect {

class HostInNetns : public HostRedirect {
 public:
  HostInNetns(std::unique_ptr<HostRedirect> inner, netns::NetnsRef host)
      : inner_(std::move(inner)), host_(std::move(host)) {}

  std::string_view name() const override { return inner_->name(); }
  Result<> install_rules(const HostProbeConfig& cfg) override;
  Result<> remove_rules() override;
  Result<> ensure_sets(bool ipv6) override;
  Result<> flush_sets() override;
  Result<> destroy_sets() override;
  Result<> add_pod_ip(const IpAddress& ip, const std::string& pod_uid) override;
  Result<> remove_pod_ip(const IpAddress& ip, const std::string& pod_uid) override;
  Result<std::vector<ProbeSetEntry>> list_sets() override;

 private:
  // Runs `fn` on a worker inside the node's netns; its result, or why the
  // netns could not be entered.
  Result<> run(const std::function<Result<>()>& fn);

  std::unique_ptr<HostRedirect> inner_;
  netns::NetnsRef host_;
};

}  // namespace ambient::redirect
