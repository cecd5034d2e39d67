// In-pod redirection with eBPF (docs/redirection.md#ebpf): the programs,
// loaded once per agent (ebpf/programs.h), are attached as tc filters
// inside the pod's netns, next to the same fwmark rule and table-100 route
// the netfilter backends use and two loopback sysctls. No netfilter rule
// and no conntrack in the pod; nothing on the node.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "redirect/backend.h"
#include "redirect/ebpf/programs.h"
#include "redirect/ebpf/tc.h"

namespace ambient::redirect {

namespace ebpf {

// One of a pod's filters: which program goes on which hook.
struct Attachment {
  Interface itf;
  Hook hook;
  Program program;
};

// Where `cfg`'s programs go among `interfaces`, in the order they go in:
// lo first (inert until something is looped to it), then every egress
// (capture starts; new connections find 15001 through lo), then every
// ingress. Interfaces without an Ethernet header get nothing.
std::vector<Attachment> plan(const std::vector<Interface>& interfaces,
                             const PodRedirectConfig& cfg);

}  // namespace ebpf

class EbpfBackend : public RedirectBackend {
 public:
  explicit EbpfBackend(std::shared_ptr<ebpf::Programs> programs) : programs_(std::move(programs)) {}
  std::string_view name() const override { return "ebpf"; }
  Result<> install(const netns::Netns& ns, const PodRedirectConfig& cfg,
                   const std::function<void()>& routed = {}) override;
  Result<VerifyReport> verify(const netns::Netns& ns, const PodRedirectConfig& cfg) const override;
  Result<> remove(const netns::Netns& ns, const PodRedirectConfig& cfg) override;

 private:
  std::shared_ptr<ebpf::Programs> programs_;
};

}  // namespace ambient::redirect
