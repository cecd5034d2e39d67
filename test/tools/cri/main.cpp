// cri-ctl: the CRI client by hand, for debugging a runtime test's containerd
// (crictl is not in Debian). Configs are crictl's JSON: a PodSandboxConfig
// or a ContainerConfig in protobuf's JSON mapping.
//
//   cri-ctl --endpoint SOCK version
//   cri-ctl --endpoint SOCK runp POD.json             -> sandbox ID
//   cri-ctl --endpoint SOCK stopp|rmp|inspectp ID
//   cri-ctl --endpoint SOCK pods
//   cri-ctl --endpoint SOCK create POD_ID CONTAINER.json POD.json  -> container ID
//   cri-ctl --endpoint SOCK start|stop|rm|inspect ID
//   cri-ctl --endpoint SOCK exec ID CMD [ARG...]     (exits with CMD's code)
//   cri-ctl --endpoint SOCK images
#include <google/protobuf/util/json_util.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cri_client.h"

namespace {

using ambient::Result;
using ambient::cri::CriClient;
using nlohmann::json;
namespace v1 = runtime::v1;
using Args = std::vector<std::string>;

int usage() {
  std::cerr << "usage: cri-ctl --endpoint SOCK "
               "version|runp F|stopp ID|rmp ID|inspectp ID|pods|create POD F PODF|"
               "start ID|stop ID|rm ID|inspect ID|exec ID CMD...|images\n";
  return 2;
}

int fail(const ambient::Error& e) {
  std::cerr << "cri-ctl: " << e.describe() << "\n";
  return 1;
}

template <class T>
bool load(const std::string& path, T* msg) {
  std::ifstream f(path);
  std::stringstream text;
  text << f.rdbuf();
  auto st = google::protobuf::util::JsonStringToMessage(text.str(), msg);
  if (!f || !st.ok()) {
    std::cerr << "cri-ctl: " << path << ": " << st.ToString() << "\n";
    return false;
  }
  return true;
}

template <class M>
std::string to_json(const M& msg) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(msg, &out, opts);
  return out;
}

// Prints the value or the error; the exit code.
template <class T, class Print>
int report(Result<T> r, Print print) {
  if (!r) return fail(r.error());
  print(*r);
  return 0;
}

int report(const Result<>& r) { return r ? 0 : fail(r.error()); }

int sandbox_status(CriClient& c, const std::string& id) {
  return report(c.pod_sandbox_status(id), [](const ambient::cri::SandboxStatus& s) {
    std::cout << json{{"id", s.id},   {"ready", s.ready},      {"ip", s.ip},    {"ips", s.ips},
                      {"pid", s.pid}, {"netns", s.netns_path}, {"info", s.info}}
                     .dump(2)
              << "\n";
  });
}

int create(CriClient& c, const Args& a) {
  v1::ContainerConfig config;
  v1::PodSandboxConfig sandbox;
  if (!load(a.at(1), &config) || !load(a.at(2), &sandbox)) return 1;
  return report(c.create_container(a.at(0), config, sandbox),
                [](const std::string& id) { std::cout << id << "\n"; });
}

int exec(CriClient& c, const Args& a) {
  auto r = c.exec_sync(a.at(0), Args(a.begin() + 1, a.end()));
  if (!r) return fail(r.error());
  std::fwrite(r->out.data(), 1, r->out.size(), stdout);
  std::fwrite(r->err.data(), 1, r->err.size(), stderr);
  return r->exit_code;
}

int dispatch(CriClient& c, const std::string& cmd, const Args& a) {
  auto print_id = [](const std::string& id) { std::cout << id << "\n"; };
  // Each command with the number of operands it needs (-1: an ID and a command).
  const std::map<std::string, std::pair<int, std::function<int()>>> cmds = {
      {"version",
       {0, [&] { return report(c.version(), [](auto& v) { std::cout << to_json(v); }); }}},
      {"runp",
       {1,
        [&] {
          v1::PodSandboxConfig config;
          return load(a[0], &config) ? report(c.run_pod_sandbox(config), print_id) : 1;
        }}},
      {"stopp", {1, [&] { return report(c.stop_pod_sandbox(a[0])); }}},
      {"rmp", {1, [&] { return report(c.remove_pod_sandbox(a[0])); }}},
      {"inspectp", {1, [&] { return sandbox_status(c, a[0]); }}},
      {"pods",
       {0,
        [&] {
          return report(c.list_pod_sandbox(), [](auto& pods) {
            for (const auto& p : pods) std::cout << to_json(p);
          });
        }}},
      {"create", {3, [&] { return create(c, a); }}},
      {"start", {1, [&] { return report(c.start_container(a[0])); }}},
      {"stop", {1, [&] { return report(c.stop_container(a[0])); }}},
      {"rm", {1, [&] { return report(c.remove_container(a[0])); }}},
      {"inspect",
       {1,
        [&] {
          return report(c.container_status(a[0]), [](const ambient::cri::ContainerStatus& s) {
            std::cout << json{{"id", s.id},
                              {"state", v1::ContainerState_Name(s.state)},
                              {"exitCode", s.exit_code},
                              {"reason", s.reason},
                              {"message", s.message},
                              {"logPath", s.log_path}}
                             .dump(2)
                      << "\n";
          });
        }}},
      {"exec", {-1, [&] { return exec(c, a); }}},
      {"images",
       {0,
        [&] {
          return report(c.list_images(), [](auto& images) {
            for (const auto& i : images) std::cout << to_json(i);
          });
        }}},
  };
  auto it = cmds.find(cmd);
  if (it == cmds.end()) return usage();
  const int want = it->second.first;
  if (want >= 0 ? static_cast<int>(a.size()) != want : a.size() < 2) return usage();
  return it->second.second();
}

}  // namespace

int main(int argc, char** argv) {
  Args args(argv + 1, argv + argc);
  if (args.size() < 3 || args[0] != "--endpoint") return usage();
  CriClient client(args[1]);
  return dispatch(client, args[2], Args(args.begin() + 3, args.end()));
}
