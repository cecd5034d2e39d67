// istio-cni: the chained CNI plugin. All logic is in dispatcher.cpp; this
// file binds it to the real process environment.
#include <nss.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <string_view>

#include "dispatcher.h"
#include "kube_fallback.h"

namespace {
constexpr const char* kHelp = R"(istio-cni: Istio ambient chained CNI plugin (ambient-cni)

The container runtime runs this binary for every pod sandbox, after the
primary CNI. It prints the previous result unchanged and, for pods that may
be enrolled in ambient, tells the node agent over
<cni_agent_run_dir>/pluginevent.sock (POST /cmdadd, /cmddel). ADD fails
closed if the agent does not answer 200 within 5 s.

Usage: istio-cni [--help]   (configuration on stdin, parameters in env)

Environment (CNI spec):
  CNI_COMMAND          ADD, DEL, CHECK, STATUS, GC or VERSION; unset prints the
                       plugin and supported CNI versions to stderr
  CNI_CONTAINERID      container ID (ADD, DEL, CHECK)
  CNI_NETNS            pod network namespace path (ADD, CHECK; optional for DEL)
  CNI_IFNAME           interface name (ADD, DEL, CHECK)
  CNI_PATH             plugin search path (required by every command but VERSION)
  CNI_ARGS             K8S_POD_NAME, K8S_POD_NAMESPACE, K8S_POD_UID,
                       K8S_POD_INFRA_CONTAINER_ID, IgnoreUnknown
  CNI_NETNS_OVERRIDE   1/true: skip the check that CNI_NETNS is not our own netns

Configuration keys (stdin): cniVersion, name, type, prevResult,
  plugin_log_level, cni_agent_run_dir, ambient_enabled, enablement_selectors,
  exclude_namespaces, pod_namespace, native_nftables,
  enable_ambient_detection_retry. Keys match case-insensitively; unknown keys
  are ignored; a wrong type is an error.
)";
// The binary is fully static (cni-plugin/CMakeLists.txt). Two things could
// still make glibc or OpenSSL load the host's shared objects, built for
// other library versions, and both only matter on the API fallback path:
// NSS modules named in the host's nsswitch.conf (hosts: resolve,
// myhostname, ...) and providers named in its openssl.cnf. Before that
// path runs, host lookups are pinned to glibc's built-in files and dns
// modules and OpenSSL is told not to read its configuration.
ambient::Result<std::unique_ptr<ambient::cni::KubeApi>> fallback_api(
    const std::string& kubeconfig) {
  ::__nss_configure_lookup("hosts", "files dns");
  ::OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, nullptr);
  auto api = ambient::cni::KubeconfigApi::load(kubeconfig);
  if (!api) return std::move(api).error();
  return std::unique_ptr<ambient::cni::KubeApi>(std::move(*api));
}

// Plain write(2) and read(2), no iostreams: see PluginIo.
void write_all(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::write(fd, s.data(), s.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nobody reads it: nothing more to do
    s.remove_prefix(static_cast<size_t>(n));
  }
}

std::string read_all(int fd) {
  std::string in;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return in;
    in.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ambient::cni;
  if (argc > 1 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    write_all(1, kHelp);
    return 0;
  }
  std::string in;
  // VERSION and the bare invocation do not read stdin (the runtime may not
  // provide any).
  const char* cmd = std::getenv("CNI_COMMAND");
  if (cmd && std::string(cmd) != "VERSION") {
    in = read_all(0);
  }
  PluginIo io{
      .getenv = [](const char* n) -> std::optional<std::string> {
        const char* v = std::getenv(n);
        if (!v) return std::nullopt;
        return std::string(v);
      },
      .stdin_data = std::move(in),
      .out = [](std::string_view s) { write_all(1, s); },
      .err = [](std::string_view s) { write_all(2, s); },
      .netns_identity = [](const std::string& path) -> std::string {
        struct stat st {};
        if (path.empty() || ::stat(path.c_str(), &st) != 0) return "";
        return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
      },
      .kube_api = fallback_api,
  };
  UnixHttpClient agent;
  return run_plugin(io, agent);
}
