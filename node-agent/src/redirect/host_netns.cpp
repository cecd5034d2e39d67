#include "redirect/host_netns.h"

#include <optional>

namespace ambient::redirect {

Result<> HostInNetns::run(const std::function<Result<>()>& fn) {
  Result<> out;
  auto entered = netns::run_in_netns(*host_, [&]() -> Result<> {
    out = fn();
    return {};
  });
  if (!entered)
    return std::move(entered).error().context("enter the node's netns " + host_->path());
  return out;
}

Result<> HostInNetns::install_rules(const HostProbeConfig& cfg) {
  return run([&] { return inner_->install_rules(cfg); });
}
Result<> HostInNetns::remove_rules() {
  return run([&] { return inner_->remove_rules(); });
}
Result<> HostInNetns::ensure_sets(bool ipv6) {
  return run([&] { return inner_->ensure_sets(ipv6); });
}
Result<> HostInNetns::flush_sets() {
  return run([&] { return inner_->flush_sets(); });
}
Result<> HostInNetns::destroy_sets() {
  return run([&] { return inner_->destroy_sets(); });
}
Result<> HostInNetns::add_pod_ip(const IpAddress& ip, const std::string& pod_uid) {
  return run([&] { return inner_->add_pod_ip(ip, pod_uid); });
}
Result<> HostInNetns::remove_pod_ip(const IpAddress& ip, const std::string& pod_uid) {
  return run([&] { return inner_->remove_pod_ip(ip, pod_uid); });
}
Result<std::vector<ProbeSetEntry>> HostInNetns::list_sets() {
  std::optional<Result<std::vector<ProbeSetEntry>>> listed;
  AMBIENT_RETURN_IF_ERROR(run([&]() -> Result<> {
    listed.emplace(inner_->list_sets());
    return {};
  }));
  return std::move(*listed);
}

}  // namespace ambient::redirect
