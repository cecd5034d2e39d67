// istio-cni: the chained CNI plugin. All logic is in dispatcher.cpp; this
// file binds it to the real process environment.
#include <nss.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "agent_client.h"
#include "dispatcher.h"
#include "kube_fallback.h"
#include "logger.h"

// Static initializers that fast-path.ld keeps from running at start-up,
// and OpenSSL's CPUID probe (its .init fragment, dropped there too).
extern "C" {
using InitFn = void (*)();
extern const InitFn ambient_fallback_init_start[], ambient_fallback_init_end[];
extern const InitFn ambient_agent_client_init_start[], ambient_agent_client_init_end[];
void OPENSSL_cpuid_setup();
}

namespace {

// Every exec pays for start-up work, but most never reach the code it is
// for: only the API fallback uses yaml-cpp, OpenSSL and Asio's SSL layer,
// and VERSION or an excluded pod never talk to the agent. Each group's
// initializers run once, just before its code first runs.
void run_initializers(const InitFn* begin, const InitFn* end) {
  for (const InitFn* f = begin; f != end; ++f) (*f)();
}

void init_agent_client() {
  static bool done = false;
  if (done) return;
  done = true;
  run_initializers(ambient_agent_client_init_start, ambient_agent_client_init_end);
}

void init_fallback() {
  static bool done = false;
  if (done) return;
  done = true;
  ::OPENSSL_cpuid_setup();
  run_initializers(ambient_fallback_init_start, ambient_fallback_init_end);
}

class LazyAgentClient : public ambient::cni::AgentClient {
 public:
  ambient::Result<ambient::cni::HttpReply> post(const std::string& socket_path,
                                                std::string_view target, const std::string& body,
                                                std::chrono::milliseconds timeout) override {
    init_agent_client();
    return client_.post(socket_path, target, body, timeout);
  }

 private:
  ambient::cni::UnixHttpClient client_;
};

// The binary is fully static (cni-plugin/CMakeLists.txt). Two things could
// still make glibc or OpenSSL load the host's shared objects, built for
// other library versions, and both only matter on the API fallback path:
// NSS modules named in the host's nsswitch.conf (hosts: resolve,
// myhostname, ...) and providers named in its openssl.cnf. Before that
// path runs, host lookups are pinned to glibc's built-in files and dns
// modules and OpenSSL is told not to read its configuration.
ambient::Result<std::unique_ptr<ambient::cni::KubeApi>> fallback_api(
    const std::string& kubeconfig) {
  init_fallback();
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

// Straight into the string, which grows as needed: a large buffer on the
// stack would fault in stack pages that nothing else in the run uses.
std::string read_all(int fd) {
  std::string in(4096, '\0');
  size_t used = 0;
  for (;;) {
    if (used == in.size()) in.resize(in.size() * 2);
    ssize_t n = ::read(fd, in.data() + used, in.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    used += static_cast<size_t>(n);
  }
  in.resize(used);
  return in;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ambient::cni;
  std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  std::string in;
  // VERSION and the bare invocation do not read stdin (the runtime may not
  // provide any), nor do --help and --version (a person at a terminal).
  const char* cmd = std::getenv("CNI_COMMAND");
  if (!is_answered_flag(args) && cmd && std::string(cmd) != "VERSION") {
    in = read_all(0);
  }
  PluginIo io{
      .getenv = [](const char* n) -> std::optional<std::string> {
        const char* v = std::getenv(n);
        if (!v) return std::nullopt;
        return std::string(v);
      },
      .stdin_data = std::move(in),
      .args = std::move(args),
      .out = [](std::string_view s) { write_all(1, s); },
      .err = [](std::string_view s) { write_all(2, s); },
      .netns_identity = [](const std::string& path) -> std::string {
        struct stat st {};
        if (path.empty() || ::stat(path.c_str(), &st) != 0) return "";
        return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
      },
      .kube_api = fallback_api,
      .log_socket_exists =
          [](const std::string& path) {
            struct stat st {};
            return ::stat(path.c_str(), &st) == 0;
          },
      .send_log = [](const std::string& path,
                     std::string_view body) { send_log(path, body, kLogSendBudget); },
  };
  LazyAgentClient agent;
  return run_plugin(io, agent);
}
