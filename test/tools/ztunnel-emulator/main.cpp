// ztunnel-emulator: a ztunnel stand-in for end-to-end tests. See
// emulator.h for the behaviour and --help for the interface.
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "emulator.h"
#include "lib/unique_fd.h"
#include "log.h"
#include "process/fd_table.h"

namespace {

constexpr std::string_view kUsage = R"(Usage: ztunnel-emulator [flags]

A ztunnel stand-in for end-to-end tests. Connects to the node agent's ZDS
socket (SOCK_SEQPACKET), sends ZdsHello{V1}, answers every WorkloadRequest
with exactly one Ack following ztunnel's state machine
(docs/zds.md#ztunnel-state), and for each AddWorkload binds ztunnel's
listeners inside the pod netns: TCP [::]:15001, [::]:15006, [::]:15008 and
TCP+UDP 127.0.0.1:15053 and [::1]:15053 (skipped when lo has IPv6
disabled), all with SO_MARK=1337 and SO_REUSEPORT. Every accepted
connection gets the line
  ztunnel-emulator uid=<uid> port=<port> orig_dst=<ip:port>
and is closed; every UDP datagram gets the same line back.

Flags (a flag wins over its environment variable):
  --uds PATH         ZDS socket to connect to.
                     env INPOD_UDS; default /var/run/ztunnel/ztunnel.sock
  --record FILE      Append one JSON line per accepted connection or datagram:
                     {"uid":"..","port":15001,"proto":"tcp"|"udp","peer":"ip:port",
                      "local":"ip:port","orig_dst":"ip:port","nat":true|false}
                     IPv6 addresses are written as [ip]:port.
                     env ZTUNNEL_EMULATOR_RECORD; default: no record
  --state FILE       Rewrite atomically (tmp + rename) after every event:
                     {"connected":bool,"snapshot_received":bool,"ready":bool,
                      "workloads":{"<uid>":{"state":"Up"|"Pending",
                        "info":{"name","namespace","serviceAccount"},
                        "netns":"<st_dev>:<st_ino>"}},"adds":N,"dels":N,"keeps":N}
                     env ZTUNNEL_EMULATOR_STATE; default: no state file
  --log-level LEVEL  debug, info, warn or error; logs go to stderr.
                     env ZTUNNEL_EMULATOR_LOG_LEVEL; default info
  env ENABLE_ORIG_SRC=false
                     ztunnel's switch: TCP listeners without IP_TRANSPARENT
                     (default: with it, best effort)
  -h, --help         Show this help.

Exit status: 0 after SIGTERM/SIGINT, 1 after a ZDS protocol error (ztunnel
exits too: Add without workload_info, Keep after SnapshotSent, a second
SnapshotSent), 2 on bad usage or a start-up failure.
)";

std::string env_or(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return (v && *v) ? std::string(v) : std::move(fallback);
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "ztunnel-emulator: %s\nTry --help.\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread exists, as ztunnel's runtime would want: each proxy
  // holds five listening sockets and a netns fd.
  ambient::reserve_fd_table(16384);
  using ambient::test::LogLevel;
  ambient::test::Options options{
      .uds = env_or("INPOD_UDS", "/var/run/ztunnel/ztunnel.sock"),
      .record_path = env_or("ZTUNNEL_EMULATOR_RECORD", ""),
      .state_path = env_or("ZTUNNEL_EMULATOR_STATE", ""),
  };
  std::string log_level = env_or("ZTUNNEL_EMULATOR_LOG_LEVEL", "info");

  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fwrite(kUsage.data(), 1, kUsage.size(), stdout);
      return 0;
    }
    std::string* target = nullptr;
    std::string_view name = arg;
    std::string_view inline_value;
    bool has_inline = false;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
      has_inline = true;
    }
    if (name == "--uds") {
      target = &options.uds;
    } else if (name == "--record") {
      target = &options.record_path;
    } else if (name == "--state") {
      target = &options.state_path;
    } else if (name == "--log-level") {
      target = &log_level;
    } else {
      return usage_error("unknown argument " + std::string(arg));
    }
    if (has_inline) {
      *target = std::string(inline_value);
    } else if (i + 1 < argc) {
      *target = argv[++i];
    } else {
      return usage_error(std::string(name) + " needs a value");
    }
  }
  auto level = ambient::test::parse_log_level(log_level);
  if (!level) return usage_error("bad log level " + log_level);
  ambient::test::set_log_level(*level);

  // Block the stop signals before any thread exists so every thread
  // inherits the mask and they are only ever seen through the signalfd,
  // which the ZDS loop polls next to its socket.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr) != 0) {
    return usage_error("pthread_sigmask failed");
  }
  ambient::UniqueFd stop_fd(::signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!stop_fd.valid()) return usage_error("signalfd failed");
  // Peers that vanish mid-reply must not kill the emulator.
  ::signal(SIGPIPE, SIG_IGN);

  auto emulator = ambient::test::Emulator::create(options, stop_fd.get());
  if (!emulator) {
    ambient::test::log_error("start-up failed: " + emulator.error().describe());
    return 2;
  }
  ambient::test::log_info("starting: uds=" + options.uds + " record=" + options.record_path +
                          " state=" + options.state_path + " pid=" + std::to_string(::getpid()));
  int code = (*emulator)->run();
  emulator->reset();  // closes every listener and joins the serving thread
  ambient::test::log_info("exiting with code " + std::to_string(code));
  return code;
}
