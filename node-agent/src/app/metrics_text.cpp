#include "app/metrics_text.h"

namespace ambient::app {

namespace {

void header(std::string& s, const char* name, const char* type, const char* help) {
  s += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

std::string metrics_text(const cni_server::CniMetrics& cni, const agent::EnrollMetrics& enroll,
                         size_t enrolled_pods, const zds::ZdsServer& zds) {
  std::string s;
  header(s, "istio_cni_plugin_requests_total", "counter", "CNI events handled by the agent.");
  for (const auto& [code, n] :
       {std::pair{"200", &cni.requests_200}, std::pair{"400", &cni.requests_400},
        std::pair{"500", &cni.requests_500}}) {
    s += std::string("istio_cni_plugin_requests_total{response_code=\"") + code + "\"} " +
         std::to_string(n->load()) + "\n";
  }
  header(s, "ztunnel_connected", "gauge", "Number of connected ztunnels.");
  s += "ztunnel_connected " + std::to_string(zds.connected()) + "\n";
  header(s, "ambient_enrolled_pods", "gauge", "Pods currently enrolled by this agent.");
  s += "ambient_enrolled_pods " + std::to_string(enrolled_pods) + "\n";
  header(s, "ambient_cmdadd_duration_seconds", "histogram", "Time to answer the plugin's /cmdadd.");
  s += cni.cmdadd.render("ambient_cmdadd_duration_seconds");
  const char* phase = "ambient_enroll_phase_duration_seconds";
  header(s, phase, "histogram", "Enrollment time by phase.");
  s += enroll.decision.render(phase, "phase=\"decision\"");
  s += enroll.netns_open.render(phase, "phase=\"netns\"");
  s += enroll.rules.render(phase, "phase=\"rules\"");
  s += enroll.zds_add.render(phase, "phase=\"zds\"");
  s += enroll.probe_set.render(phase, "phase=\"probe_set\"");
  s += cni.parse.render(phase, "phase=\"parse\"");
  const char* trip = "ambient_zds_round_trip_duration_seconds";
  header(s, trip, "histogram", "ZDS message sent to ztunnel's ack.");
  const auto& zm = zds.metrics();
  s += zm.add.render(trip, "op=\"add\"");
  s += zm.del.render(trip, "op=\"del\"");
  s += zm.keep.render(trip, "op=\"keep\"");
  s += zm.snapshot_sent.render(trip, "op=\"snapshot_sent\"");
  return s;
}

std::string standalone_store_metrics_text(uint64_t write_failures) {
  std::string s;
  const char* name = "ambient_standalone_store_write_failures_total";
  header(s, name, "counter", "Failed saves of the enrolled pods to the run dir (standalone mode).");
  return s + name + " " + std::to_string(write_failures) + "\n";
}

}  // namespace ambient::app
