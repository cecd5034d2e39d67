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
  // `rules`, when set, is the netfilter backend a pod moves to when
  // ztunnel's outbound listener in it cannot take eBPF's hand-over
  // (docs/redirection.md#ebpf-fallback).
  explicit EbpfBackend(std::shared_ptr<ebpf::Programs> programs,
                       std::shared_ptr<RedirectBackend> rules = nullptr)
      : programs_(std::move(programs)), rules_(std::move(rules)) {}
  std::string_view name() const override { return "ebpf"; }
  Result<> install(const netns::Netns& ns, const PodRedirectConfig& cfg,
                   const std::function<void()>& routed = {}) override;
  Result<VerifyReport> verify(const netns::Netns& ns, const PodRedirectConfig& cfg) const override;
  Result<> remove(const netns::Netns& ns, const PodRedirectConfig& cfg) override;
  // Moves the pod to the rules when ztunnel's 15001 listener has no
  // IP_TRANSPARENT: the programs' IPv4 hand-over needs it. True when the
  // listener has it.
  Result<bool> ztunnel_ready(const netns::Netns& ns, const PodRedirectConfig& cfg) override;
  // Whether the pod was moved to the rules.
  bool on_rules(const netns::Netns& ns) const;
  // The rules' backend name for a pod moved to them.
  std::string pod_backend(const netns::Netns& ns) const override;

 private:
  std::shared_ptr<ebpf::Programs> programs_;
  std::shared_ptr<RedirectBackend> rules_;
};

}  // namespace ambient::redirect
