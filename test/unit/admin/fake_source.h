// A scripted AdminSource: fixed pods, verify answers by UID, and the
// requests it was asked, for the admin service's and ambientctl's tests.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "admin/source.h"

namespace ambient::test {

inline admin::v1::Pod fake_pod(const std::string& ns, const std::string& name,
                               const std::string& uid, const std::string& state) {
  admin::v1::Pod p;
  p.set_namespace_(ns);
  p.set_name(name);
  p.set_uid(uid);
  p.set_state(state);
  p.set_backend("nftables");
  if (state == "failed") {
    p.set_zds_state("none");
    p.set_last_error("pod " + ns + "/" + name + ": no ztunnel connection");
    p.set_last_error_at("2024-05-01T10:00:02.000Z");
  } else {
    p.set_zds_state(state == "enrolled" ? "acked" : "keep");
    p.set_service_account("default");
    p.set_container_id("c0ffee-" + name);
    if (state == "enrolled") {
      p.set_netns("/var/run/netns/cni-" + name);
      p.set_netns_inode(4026532001);
      p.set_enrolled_at("2024-05-01T10:00:01.250Z");
      for (auto [step, ms] : {std::pair{"rules", 0.61}, {"probe_set", 0.02}, {"zds_ack", 0.0}}) {
        auto* s = p.add_steps();
        s->set_name(step);
        s->set_duration_ms(ms);
      }
    }
    p.add_ips("10.244.0." + std::to_string(name.size() + 6));
    p.mutable_redirect()->set_dns_capture(true);
  }
  return p;
}

class FakeSource : public admin::AdminSource {
 public:
  admin::v1::Status status_answer;
  std::vector<admin::v1::Pod> pod_list;
  std::map<std::string, std::vector<std::string>> problems;  // by UID
  std::map<std::string, std::string> verify_errors;          // by UID
  admin::EventHub hub;

  admin::v1::Status status() const override { return status_answer; }
  std::vector<admin::v1::Pod> pods() const override { return pod_list; }
  Result<admin::v1::PodVerify> verify(const admin::v1::Pod& pod) const override {
    {
      std::lock_guard lk(mu_);
      verified_.push_back(pod.uid());
    }
    if (auto e = verify_errors.find(pod.uid()); e != verify_errors.end()) {
      return make_error(Errc::Unavailable, e->second);
    }
    admin::v1::PodVerify v;
    if (auto p = problems.find(pod.uid()); p != problems.end()) {
      for (const auto& s : p->second) v.add_problems(s);
    }
    return v;
  }
  // The last trace request, and the pod it was for ("" when none).
  admin::v1::TraceRequest traced;
  std::string traced_uid;
  Result<admin::v1::TraceResponse> trace(const admin::v1::Pod* pod,
                                         const admin::v1::TraceRequest& req) override {
    traced = req;
    traced_uid = pod ? pod->uid() : "";
    if (!pod && req.netns().empty()) return make_error(Errc::NotFound, "no such pod");
    admin::v1::TraceResponse r;
    r.set_receiver("ztunnel-outbound");
    r.set_receiver_port(15001);
    r.set_original_destination(req.to());
    r.add_decisions(
        "istio-ambient-nat istio-output: meta l4proto tcp ip daddr != 127.0.0.1/32 mark and "
        "0xfff != 0x539 redirect to :15001 (+1)");
    r.set_explanation("outbound TCP to " + req.to() +
                      " was taken by ztunnel's outbound listener on port 15001; counted.");
    r.set_enrolled(pod != nullptr);
    return r;
  }
  admin::EventHub& events() override { return hub; }

  std::vector<std::string> verified() const {
    std::lock_guard lk(mu_);
    return verified_;
  }

 private:
  mutable std::mutex mu_;
  mutable std::vector<std::string> verified_;
};

// Three pods in two namespaces, listed out of order: one enrolled, one
// adopted without a netns, one whose enrollment failed.
inline FakeSource& populate(FakeSource& s) {
  s.pod_list = {fake_pod("ambient-demo", "web", "uid-web", "enrolled"),
                fake_pod("other", "db", "uid-db", "failed"),
                fake_pod("ambient-demo", "api", "uid-api", "without_netns")};
  auto& st = s.status_answer;
  st.set_version("0.1.0");
  st.set_backend("nftables");
  st.set_backend_reason("nftables (native nftables requested)");
  st.set_mode("standalone");
  st.set_ready(true);
  st.set_ztunnel_connections(1);
  st.set_zds_accepting(true);
  st.set_snapshot_pods(2);
  st.mutable_pods()->set_enrolled(1);
  st.mutable_pods()->set_without_netns(1);
  st.mutable_pods()->set_failed(1);
  st.set_host_probes("SNAT to 169.254.7.127 for kubelet's uid 0");
  st.set_uptime_seconds(3723);
  for (auto [k, v] : {std::pair{"cni-agent-run-dir", "/var/run/istio-cni"},
                      {"ambient-dns-capture", "true"},
                      {"exclude-namespaces", ""}}) {
    auto* e = st.add_config();
    e->set_name(k);
    e->set_value(v);
  }
  return s;
}

}  // namespace ambient::test
