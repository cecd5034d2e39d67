#include "cli.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>

#include <grpcpp/grpcpp.h>

#include "admin.grpc.pb.h"
#include "inspect.h"
#include "lib/unique_fd.h"
#include "lib/version.h"
#include "output.h"

namespace ambient::ctl {

namespace v1 = admin::v1;

namespace {

struct Command {
  const char* name;
  const char* usage;
  const char* summary;
  const char* flags;  // the subcommand's own flags, one per line
};

const Command kCommands[] = {
    {"status", "ambientctl status",
     "the agent: version, backend and why, ztunnel, pod counts, "
     "configuration in effect",
     ""},
    {"pods", "ambientctl pods [-n NAMESPACE]",
     "every pod the agent knows: enrolled, without netns (Keep), failed",
     "  -n, --namespace NS   only pods of namespace NS\n"},
    {"pod", "ambientctl pod NAMESPACE/NAME",
     "one pod: identity, sandbox, netns, backend, enrollment steps and times, ZDS state, last "
     "error",
     ""},
    {"verify", "ambientctl verify [NAMESPACE/NAME | --all]",
     "compare each pod's live redirection (rules or programs, routes, ip rules, sysctls, "
     "ztunnel's listeners) with what the agent would install; no argument = --all",
     "  --all                every enrolled pod\n"},
    {"inspect", "ambientctl inspect NAMESPACE/NAME | --netns PATH",
     "the redirection as the kernel holds it in a pod's netns: nft tables, iptables chains, "
     "tc BPF programs, ip rules, route table 100, sysctls, listening sockets; --netns needs no "
     "agent and changes nothing",
     "  --netns PATH         a network namespace file (e.g. /var/run/netns/cni-...)\n"},
    {"trace",
     "ambientctl trace NAMESPACE/NAME --to IP:PORT [--udp] [--mark N] | --inbound [--from IP] "
     "--port PORT",
     "a real probe through the pod's redirection, made by the agent: who received it "
     "(ztunnel-outbound, ztunnel-inbound, ztunnel-hbone, ztunnel-dns, app or nobody), the "
     "original destination it sees, the rule or program decisions whose counters moved, and "
     "why; nothing is left behind",
     "  --to IP:PORT         outbound: connect from inside the pod ([IPv6]:PORT for IPv6)\n"
     "  --udp                outbound: a UDP DNS query instead of a TCP connection\n"
     "  --mark N             outbound: SO_MARK of the probe socket (1337: ztunnel's own)\n"
     "  --inbound            connect to the pod's IP from the node's netns\n"
     "  --from IP            inbound: the probe's source address (default: the node's own)\n"
     "  --port PORT          inbound: the pod's port\n"
     "  --netns PATH         the pod's netns, for a pod the agent has not enrolled\n"},
    {"events", "ambientctl events [-f]",
     "the agent's events (enrolled, failed, removed, drift, repaired, zds_connected, "
     "zds_disconnected, dropped) from now on",
     "  -f, --follow         keep printing until interrupted (default: stop after --timeout)\n"},
    {"version", "ambientctl version", "print ambientctl's version", ""},
};

const char* const kGlobalFlags =
    "Global flags (before or after the command):\n"
    "  -o, --output FORMAT  table (default), json or yaml; json and yaml carry every field\n"
    "                       under its name in proto/admin.proto\n"
    "  --socket PATH        the agent's admin socket (env AMBIENTCTL_SOCKET; default\n"
    "                       /var/run/istio-cni/admin.sock)\n"
    "  --timeout SECONDS    per call (default 10)\n"
    "  -h, --help           this text; `ambientctl COMMAND --help` for one command\n";

const char* const kExitCodes =
    "Exit codes:\n"
    "  0  success; verify: every pod clean\n"
    "  1  verify: drift found (each difference printed)\n"
    "  2  error: bad usage or input, unknown pod, a check that could not be made, an agent error\n"
    "  3  no agent to ask (not running, no socket) or the agent refused this caller\n";

std::string main_help() {
  std::string s =
      "ambientctl: inspect and debug the ambient node agent (ambient-cni) and the traffic\n"
      "redirection of its pods. Run it as root on the node, e.g.\n"
      "  kubectl exec -n istio-system ds/istio-cni-node -- ambientctl pods\n\n"
      "Commands:\n";
  for (const auto& c : kCommands) s += "  " + std::string(c.usage) + "\n      " + c.summary + "\n";
  return s + "\n" + kGlobalFlags + "\n" + kExitCodes;
}

std::string command_help(const Command& c) {
  std::string s = "Usage: " + std::string(c.usage) + "\n\n" + c.summary + "\n";
  if (*c.flags) s += "\nFlags:\n" + std::string(c.flags);
  return s + "\n" + kGlobalFlags + "\n" + kExitCodes;
}

struct Args {
  std::string command;
  std::vector<std::string> positional;
  Format format = Format::Table;
  std::string socket;
  int timeout_s = 10;
  bool help = false;
  std::string ns;
  bool all = false;
  bool follow = false;
  std::string netns;
  // trace
  std::string to, from;
  bool udp = false, inbound = false;
  uint32_t port = 0, mark = 0;
  bool port_set = false, mark_set = false;
};

// A number in [min, max], or nothing.
std::optional<uint32_t> parse_uint(const std::optional<std::string>& v, uint32_t min,
                                   uint32_t max) {
  if (!v || v->empty() || v->size() > 10) return std::nullopt;
  uint64_t n = 0;
  for (char c : *v) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  if (n < min || n > max) return std::nullopt;
  return static_cast<uint32_t>(n);
}

struct UsageError {
  std::string message;
};

enum class TraceFlag { NotOne, Ok, Bad };

// `trace`'s own flags; `value` takes the flag's value.
template <class Value>
TraceFlag parse_trace_flag(const std::string& arg, Value&& value, Args& a) {
  if (arg == "--udp") {
    a.udp = true;
  } else if (arg == "--inbound") {
    a.inbound = true;
  } else if (arg == "--to" || arg == "--from") {
    auto v = value();
    if (!v || v->empty()) return TraceFlag::Bad;
    (arg == "--to" ? a.to : a.from) = *v;
  } else if (arg == "--port") {
    auto n = parse_uint(value(), 1, 65535);
    if (!n) return TraceFlag::Bad;
    a.port = *n;
    a.port_set = true;
  } else if (arg == "--mark") {
    auto n = parse_uint(value(), 0, 0xffffffffu);
    if (!n) return TraceFlag::Bad;
    a.mark = *n;
    a.mark_set = true;
  } else {
    return TraceFlag::NotOne;
  }
  return TraceFlag::Ok;
}

std::string trace_flag_error(const std::string& arg) {
  if (arg == "--to") return "--to needs IP:PORT";
  if (arg == "--from") return "--from needs an IP address";
  if (arg == "--port") return "--port needs a port (1-65535)";
  return "--mark needs a number (decimal)";
}

std::optional<UsageError> parse(const std::vector<std::string>& args, Args& a) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    std::optional<std::string> inline_value;
    if (arg.rfind("--", 0) == 0) {
      if (auto eq = arg.find('='); eq != std::string::npos) {
        inline_value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
      }
    } else if (arg.size() > 2 && (arg.rfind("-o", 0) == 0 || arg.rfind("-n", 0) == 0)) {
      inline_value = arg.substr(2);
      arg = arg.substr(0, 2);
    }
    auto value = [&]() -> std::optional<std::string> {
      if (inline_value) return inline_value;
      if (i + 1 < args.size()) return args[++i];
      return std::nullopt;
    };
    if (arg == "-h" || arg == "--help") {
      a.help = true;
    } else if (arg == "-o" || arg == "--output") {
      auto v = value();
      if (!v) return UsageError{arg + " needs a value: table, json or yaml"};
      if (*v == "table") {
        a.format = Format::Table;
      } else if (*v == "json") {
        a.format = Format::Json;
      } else if (*v == "yaml") {
        a.format = Format::Yaml;
      } else {
        return UsageError{"unknown output format \"" + *v + "\": table, json or yaml"};
      }
    } else if (arg == "--socket") {
      auto v = value();
      if (!v || v->empty()) return UsageError{"--socket needs a path"};
      a.socket = *v;
    } else if (arg == "--timeout") {
      auto v = value();
      int t = 0;
      try {
        size_t used = 0;
        t = v ? std::stoi(*v, &used) : 0;
        if (v && used != v->size()) t = 0;
      } catch (...) {
        t = 0;
      }
      if (t <= 0) return UsageError{"--timeout needs a positive number of seconds"};
      a.timeout_s = t;
    } else if (arg == "-n" || arg == "--namespace") {
      auto v = value();
      if (!v || v->empty()) return UsageError{arg + " needs a namespace"};
      a.ns = *v;
    } else if (arg == "--all" || arg == "-A" || arg == "--all-namespaces") {
      a.all = true;
    } else if (arg == "-f" || arg == "--follow") {
      a.follow = true;
    } else if (arg == "--netns") {
      auto v = value();
      if (!v || v->empty()) return UsageError{"--netns needs a path"};
      a.netns = *v;
    } else if (auto t = parse_trace_flag(arg, value, a); t != TraceFlag::NotOne) {
      if (t == TraceFlag::Bad) return UsageError{trace_flag_error(arg)};
    } else if (arg.size() > 1 && arg[0] == '-') {
      return UsageError{"unknown flag " + arg};
    } else if (a.command.empty()) {
      a.command = arg;
    } else {
      a.positional.push_back(arg);
    }
  }
  return std::nullopt;
}

const Command* find_command(const std::string& name) {
  for (const auto& c : kCommands) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

// NAMESPACE/NAME, each part non-empty.
std::optional<std::pair<std::string, std::string>> split_pod(const std::string& s) {
  auto slash = s.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == s.size() ||
      s.find('/', slash + 1) != std::string::npos) {
    return std::nullopt;
  }
  return std::make_pair(s.substr(0, slash), s.substr(slash + 1));
}

// Why the agent cannot be asked, found with a plain connect() before gRPC
// gets involved: gRPC reports every one of these as "UNAVAILABLE".
std::optional<std::string> unreachable(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return "socket path too long: " + path;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return std::string("socket: ") + std::strerror(errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    return std::nullopt;
  }
  const int err = errno;
  const std::string hint =
      " (is ambient-agent running on this node? In a cluster: kubectl exec -n istio-system "
      "ds/istio-cni-node -- ambientctl ...)";
  if (err == ENOENT) return "no agent is serving " + path + ": the socket does not exist" + hint;
  if (err == ECONNREFUSED) return "no agent is serving " + path + ": connection refused" + hint;
  if (err == EACCES || err == EPERM) {
    return "permission denied on " + path + ": the admin socket is for root only (you are uid " +
           std::to_string(::geteuid()) + ")";
  }
  return "cannot connect to " + path + ": " + std::strerror(err);
}

class Client {
 public:
  Client(const std::string& path, int timeout_s)
      : stub_(v1::Admin::NewStub(
            grpc::CreateChannel("unix:" + path, grpc::InsecureChannelCredentials()))),
        timeout_(timeout_s) {}

  template <class Req, class Resp>
  grpc::Status call(grpc::Status (v1::Admin::Stub::*method)(grpc::ClientContext*, const Req&,
                                                            Resp*),
                    const Req& req, Resp* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_));
    return (stub_.get()->*method)(&ctx, req, resp);
  }

  v1::Admin::Stub& stub() { return *stub_; }
  int timeout_s() const { return timeout_; }

 private:
  std::unique_ptr<v1::Admin::Stub> stub_;
  int timeout_;
};

// A failed call: the message, and the exit code for it.
int report(const grpc::Status& s, Io& io) {
  if (s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
    io.err << "ambientctl: refused by the agent (you are uid " << ::geteuid()
           << "): " << s.error_message() << "\n";
    return kExitUnreachable;
  }
  if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    io.err << "ambientctl: the agent did not answer in time (--timeout): " << s.error_message()
           << "\n";
    return kExitError;
  }
  io.err << "ambientctl: " << s.error_message() << "\n";
  return kExitError;
}

int print(Io& io, Format f, const google::protobuf::Message& m,
          const std::function<std::string()>& table) {
  io.out << (f == Format::Table ? table() : render_data(m, f));
  return kExitOk;
}

int cmd_status(Client& c, const Args& a, Io& io) {
  v1::Status s;
  auto st = c.call(&v1::Admin::Stub::GetStatus, v1::GetStatusRequest{}, &s);
  if (!st.ok()) return report(st, io);
  return print(io, a.format, s, [&] { return status_table(s); });
}

int cmd_pods(Client& c, const Args& a, Io& io) {
  v1::ListPodsRequest req;
  req.set_namespace_(a.ns);
  v1::ListPodsResponse r;
  auto st = c.call(&v1::Admin::Stub::ListPods, req, &r);
  if (!st.ok()) return report(st, io);
  return print(io, a.format, r, [&] { return pods_table(r); });
}

int cmd_pod(Client& c, const Args& a, Io& io) {
  auto pod = split_pod(a.positional.at(0));
  v1::GetPodRequest req;
  req.set_namespace_(pod->first);
  req.set_name(pod->second);
  v1::Pod p;
  auto st = c.call(&v1::Admin::Stub::GetPod, req, &p);
  if (!st.ok()) return report(st, io);
  return print(io, a.format, p, [&] { return pod_table(p); });
}

int cmd_verify(Client& c, const Args& a, Io& io) {
  v1::VerifyRequest req;
  if (a.positional.empty()) {
    req.set_all(true);
  } else {
    auto pod = split_pod(a.positional[0]);
    req.set_namespace_(pod->first);
    req.set_name(pod->second);
  }
  v1::VerifyResponse r;
  auto st = c.call(&v1::Admin::Stub::Verify, req, &r);
  if (!st.ok()) return report(st, io);
  (void)print(io, a.format, r, [&] { return verify_table(r); });
  bool drift = false, errors = false;
  for (const auto& p : r.pods()) {
    errors = errors || !p.error().empty();
    drift = drift || (p.error().empty() && !p.clean());
  }
  if (errors) return kExitError;
  return drift ? kExitDrift : kExitOk;
}

int cmd_events(Client& c, const Args& a, Io& io) {
  grpc::ClientContext ctx;
  if (!a.follow) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(c.timeout_s()));
  }
  auto reader = c.stub().WatchEvents(&ctx, v1::WatchEventsRequest{});
  v1::Event e;
  bool first = true;
  while (reader->Read(&e)) {
    if (a.format == Format::Table) {
      io.out << event_line(e);
    } else if (a.format == Format::Json) {
      io.out << to_json(e).dump() << "\n";
    } else {
      io.out << (first ? "" : "---\n") << to_yaml(to_json(e));
    }
    first = false;
    io.out.flush();
  }
  auto st = reader->Finish();
  // Without -f the stream ends at the deadline: that is the normal end.
  if (!a.follow && st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) return kExitOk;
  if (!st.ok()) return report(st, io);
  return kExitOk;
}

int cmd_trace(Client& c, const Args& a, Io& io) {
  auto pod = split_pod(a.positional.at(0));
  v1::TraceRequest req;
  req.set_namespace_(pod->first);
  req.set_name(pod->second);
  req.set_inbound(a.inbound);
  req.set_to(a.to);
  req.set_udp(a.udp);
  req.set_from(a.from);
  req.set_port(a.port);
  req.set_mark(a.mark);
  req.set_netns(a.netns);
  v1::TraceResponse r;
  auto st = c.call(&v1::Admin::Stub::Trace, req, &r);
  if (!st.ok()) return report(st, io);
  return print(io, a.format, r, [&] { return trace_table(r); });
}

// The flags of `trace` that do not go together, checked before asking.
std::optional<std::string> trace_usage(const Args& a) {
  if (a.inbound) {
    if (!a.port_set) return "trace --inbound needs --port PORT";
    if (!a.to.empty() || a.udp || a.mark_set) {
      return "--to, --udp and --mark are for outbound traces, not --inbound";
    }
    return std::nullopt;
  }
  if (a.to.empty()) return "trace needs --to IP:PORT (outbound) or --inbound --port PORT";
  if (!a.from.empty() || a.port_set) return "--from and --port are for --inbound traces";
  return std::nullopt;
}

int usage(Io& io, const std::string& message, const Command* c) {
  io.err << "ambientctl: " << message << "\n"
         << (c ? "Usage: " + std::string(c->usage) : std::string("see ambientctl --help")) << "\n";
  return kExitError;
}

// Arguments each command takes, checked before anything is asked: what
// is wrong, or nothing.
std::optional<std::string> check_args(const Args& a) {
  const bool one_pod = a.command == "pod" || a.command == "trace" ||
                       (a.command == "verify" && !a.all) ||
                       (a.command == "inspect" && a.netns.empty());
  const size_t max_positional = (one_pod || a.command == "verify") ? 1 : 0;
  if (a.positional.size() > max_positional) {
    return "unexpected argument \"" + a.positional[max_positional] + "\"";
  }
  if (one_pod && a.command != "verify" && a.positional.empty()) {
    return a.command + " needs NAMESPACE/NAME";
  }
  if (a.command == "verify" && a.all && !a.positional.empty()) {
    return "verify takes NAMESPACE/NAME or --all, not both";
  }
  if (a.command == "inspect" && !a.netns.empty() && !a.positional.empty()) {
    return "inspect takes NAMESPACE/NAME or --netns PATH, not both";
  }
  if (!a.positional.empty() && !split_pod(a.positional[0])) {
    return "\"" + a.positional[0] + "\" is not NAMESPACE/NAME";
  }
  if (!a.ns.empty() && a.command != "pods") return "-n is for `pods` only";
  if (a.follow && a.command != "events") return "-f is for `events` only";
  if (!a.netns.empty() && a.command != "inspect" && a.command != "trace") {
    return "--netns is for `inspect` and `trace` only";
  }
  const bool trace_flags =
      !a.to.empty() || !a.from.empty() || a.udp || a.inbound || a.port_set || a.mark_set;
  if (trace_flags && a.command != "trace") {
    return "--to, --from, --udp, --inbound, --port and --mark are for `trace` only";
  }
  if (a.command == "trace") {
    if (auto why = trace_usage(a)) return *why;
  }
  return std::nullopt;
}

int dispatch(Client& client, const Args& a, Io& io) {
  if (a.command == "status") return cmd_status(client, a, io);
  if (a.command == "pods") return cmd_pods(client, a, io);
  if (a.command == "pod") return cmd_pod(client, a, io);
  if (a.command == "verify") return cmd_verify(client, a, io);
  if (a.command == "events") return cmd_events(client, a, io);
  if (a.command == "trace") return cmd_trace(client, a, io);
  if (a.command == "inspect") {
    auto pod = split_pod(a.positional[0]);
    v1::GetPodRequest req;
    req.set_namespace_(pod->first);
    req.set_name(pod->second);
    v1::Pod p;
    auto st = client.call(&v1::Admin::Stub::GetPod, req, &p);
    if (!st.ok()) return report(st, io);
    if (p.netns().empty()) {
      io.err << "ambientctl: pod " << a.positional[0] << " has no netns known to the agent (state "
             << p.state() << ")\n";
      return kExitError;
    }
    return inspect_netns(p.netns(), a.format, io.out, io.err);
  }
  return usage(io, "unknown command \"" + a.command + "\"", nullptr);
}

}  // namespace

int run(const std::vector<std::string>& args, Io& io) {
  Args a;
  a.socket = io.socket_env.empty() ? kDefaultSocket : io.socket_env;
  auto bad = parse(args, a);
  const Command* c = a.command.empty() ? nullptr : find_command(a.command);
  if (a.command == "help") {
    c = a.positional.empty() ? nullptr : find_command(a.positional[0]);
    a.help = true;
  }
  if (a.help) {
    io.out << (c ? command_help(*c) : main_help());
    return kExitOk;
  }
  if (bad) return usage(io, bad->message, c);
  if (a.command.empty()) return usage(io, "no command given", nullptr);
  if (!c) return usage(io, "unknown command \"" + a.command + "\"", nullptr);
  if (a.command == "version") {
    io.out << "ambientctl " << kVersion << "\n";
    return kExitOk;
  }
  if (auto why = check_args(a)) return usage(io, *why, c);
  if (a.command == "inspect" && !a.netns.empty()) {
    return inspect_netns(a.netns, a.format, io.out, io.err);  // no agent involved
  }
  if (auto why = unreachable(a.socket)) {
    io.err << "ambientctl: " << *why << "\n";
    return kExitUnreachable;
  }
  Client client(a.socket, a.timeout_s);
  return dispatch(client, a, io);
}

}  // namespace ambient::ctl
