#include "admin/agent_source.h"

#include <optional>

#include "admin/trace.h"
#include "lib/version.h"
#include "netns/netns.h"
#include "netns/sock_diag.h"

namespace ambient::admin {

namespace {

void add_step(v1::Pod& m, const char* name, double seconds) {
  v1::Step* s = m.add_steps();
  s->set_name(name);
  s->set_duration_ms(seconds * 1e3);
}

void set_error(v1::Pod& m, const PodRecord& rec) {
  if (rec.last_error.empty()) return;
  m.set_last_error(rec.last_error);
  m.set_last_error_at(rfc3339(rec.last_error_at));
}

}  // namespace

v1::Pod pod_message(const agent::EnrolledPod& p, const PodRecord* rec, std::string_view backend) {
  v1::Pod m;
  m.set_namespace_(p.workload.info.ns);
  m.set_name(p.workload.info.name);
  m.set_uid(p.workload.uid);
  m.set_service_account(p.workload.info.service_account);
  m.set_container_id(p.container_id);
  if (p.workload.netns) {
    m.set_netns(p.workload.netns->path());
    m.set_netns_inode(p.workload.netns->inode());
  }
  for (const auto& ip : p.ips) m.add_ips(ip.to_string());
  m.set_backend(std::string(backend));
  // Enrolled means ztunnel acked the Add; a pod adopted without a netns
  // went to ztunnel as Keep.
  m.set_state(p.workload.netns ? "enrolled" : "without_netns");
  m.set_zds_state(p.workload.netns ? "acked" : "keep");
  auto* r = m.mutable_redirect();
  r->set_dns_capture(p.redirect.dns_capture);
  r->set_ipv6(p.redirect.ipv6);
  r->set_ingress_mode(p.redirect.ingress_mode);
  for (const auto& v : p.redirect.virtual_interfaces) r->add_virtual_interfaces(v);
  if (rec) {
    if (rec->enrolled_at != std::chrono::system_clock::time_point{}) {
      m.set_enrolled_at(rfc3339(rec->enrolled_at));
      add_step(m, "rules", rec->times.rules_s);
      add_step(m, "probe_set", rec->times.probe_set_s);
      add_step(m, "zds_ack", rec->times.zds_ack_s);
    }
    set_error(m, *rec);
  }
  return m;
}

v1::Status AgentSource::status() const {
  v1::Status s;
  s.set_version(std::string(kVersion));
  s.set_backend(d_.backend_kind);
  s.set_backend_reason(d_.backend_reason);
  s.set_mode(d_.config.standalone() ? "standalone" : "kubernetes");
  s.set_ready(d_.ready && d_.ready());
  s.set_ztunnel_connections(static_cast<uint32_t>(d_.zds.connected()));
  s.set_zds_accepting(d_.zds_accepting && d_.zds_accepting());
  s.set_node_name(d_.config.node_name);
  s.set_host_probes(d_.host_probes);
  s.set_uptime_seconds(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_)
          .count());
  s.set_drift_repairs(d_.drift_repairs ? d_.drift_repairs() : 0);
  uint32_t enrolled = 0, without = 0;
  for (const auto& p : d_.pods.all()) ++(p.workload.netns ? enrolled : without);
  s.set_snapshot_pods(enrolled + without);
  auto* counts = s.mutable_pods();
  counts->set_enrolled(enrolled);
  counts->set_without_netns(without);
  uint32_t failed = 0;
  for (const auto& [uid, rec] : d_.journal.failed()) failed += d_.pods.get(uid) ? 0 : 1;
  counts->set_failed(failed);
  for (const auto& [name, value] : d_.config_values) {
    auto* e = s.add_config();
    e->set_name(name);
    e->set_value(value);
  }
  return s;
}

std::vector<v1::Pod> AgentSource::pods() const {
  std::vector<v1::Pod> out;
  for (const auto& p : d_.pods.all()) {
    auto rec = d_.journal.get(p.workload.uid);
    // eBPF may have moved a pod to the rules (docs/redirection.md#ebpf-fallback).
    const std::string backend =
        p.workload.netns ? d_.backend.pod_backend(*p.workload.netns) : d_.backend_kind;
    out.push_back(pod_message(p, rec ? &*rec : nullptr, backend));
  }
  for (const auto& [uid, rec] : d_.journal.failed()) {
    if (d_.pods.get(uid)) continue;
    v1::Pod m;
    m.set_namespace_(rec.ns);
    m.set_name(rec.name);
    m.set_uid(uid);
    m.set_state("failed");
    m.set_zds_state("none");
    m.set_backend(d_.backend_kind);
    set_error(m, rec);
    out.push_back(std::move(m));
  }
  return out;
}

Result<v1::PodVerify> AgentSource::verify_uid(const std::string& uid) const {
  auto p = d_.pods.get(uid);
  if (!p) return make_error(Errc::NotFound, "pod " + uid + " is not enrolled");
  const std::string pod = p->workload.info.ns + "/" + p->workload.info.name;
  if (!p->workload.netns) {
    return make_error(Errc::Unavailable,
                      "pod " + pod +
                          ": its netns was not found after the agent restarted (ztunnel got "
                          "Keep); nothing to compare");
  }
  const netns::Netns& ns = *p->workload.netns;
  v1::PodVerify v;
  v.set_namespace_(p->workload.info.ns);
  v.set_name(p->workload.info.name);
  v.set_uid(uid);
  AMBIENT_ASSIGN_OR_RETURN(auto report, d_.backend.verify(ns, p->redirect));
  for (auto& problem : report.problems) v.add_problems(std::move(problem));
  AMBIENT_ASSIGN_OR_RETURN(auto missing, missing_listeners(uid));
  for (const auto& m : missing) {
    v.add_problems("ztunnel listener " + m + " missing in the pod's netns");
  }
  v.set_clean(v.problems().empty());
  return v;
}

Result<std::vector<std::string>> AgentSource::missing_listeners(const std::string& uid) const {
  auto p = d_.pods.get(uid);
  if (!p || !p->workload.netns) return std::vector<std::string>{};
  const netns::Netns& ns = *p->workload.netns;
  std::vector<netns::ListeningSocket> socks;
  AMBIENT_RETURN_IF_ERROR(netns::run_in_netns(ns, [&]() -> Result<> {
                            AMBIENT_ASSIGN_OR_RETURN(socks, netns::listening_sockets_here());
                            return {};
                          }).context("list the sockets in " + ns.path()));
  return netns::missing_ztunnel_listeners(socks, p->redirect.dns_capture);
}

Result<v1::PodVerify> AgentSource::verify(const v1::Pod& pod) const {
  return verify_uid(pod.uid());
}

Result<v1::TraceResponse> AgentSource::trace(const v1::Pod* pod, const v1::TraceRequest& req) {
  std::optional<agent::EnrolledPod> cached;
  if (pod) cached = d_.pods.get(pod->uid());
  netns::NetnsRef ns;
  std::vector<std::string> ips;
  if (cached && cached->workload.netns) {
    ns = cached->workload.netns;
    for (const auto& ip : cached->ips) ips.push_back(ip.to_string());
  } else if (!req.netns().empty()) {
    if (!d_.open_pod_netns) return make_error(Errc::Unavailable, "trace --netns: not served here");
    auto opened = d_.open_pod_netns(req.netns(), req.namespace_() + "/" + req.name());
    if (!opened) return std::move(opened).error().context("trace");
    ns = std::make_shared<const netns::Netns>(std::move(*opened));
  } else {
    return make_error(Errc::NotFound, "pod " + req.namespace_() + "/" + req.name() +
                                          " is not enrolled (the agent knows no netns for it): "
                                          "give its netns with --netns PATH");
  }
  const bool enrolled = cached && cached->workload.netns;
  const std::string backend = d_.backend.pod_backend(*ns);
  TraceTarget t{.pod = *ns,
                .host = d_.host_netns.get(),
                .backend = backend,
                .ebpf = backend == "ebpf" ? d_.ebpf_programs.get() : nullptr,
                .enrolled = enrolled,
                .pod_ips = std::move(ips)};
  return run_trace(t, req).context("trace pod " + req.namespace_() + "/" + req.name());
}

}  // namespace ambient::admin
