// End to end on the real kernel: pods made by the reference CNI runtime
// with bridge + host-local + istio-cni, the real agent, the ztunnel
// emulator binding real listeners inside the pods.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <future>
#include <map>
#include <thread>

#include "agent_client.h"
#include "lib/text.h"
#include "lib/unique_fd.h"
#include "process/process.h"
#include "support/backends.h"
#include "support/churn.h"
#include "support/files.h"
#include "support/require_ok.h"
#include "support/sim_node.h"
#include "support/sockets.h"
#include "support/temp_dir.h"
#include "support/text.h"
#include "zds/wire.h"

using namespace ambient;
using namespace ambient::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// A host process (uid `uid`, as kubelet is 4242 here) in the node's netns
// connects to ip:port and reads one line: what it got.
std::string host_line_as(SimNode& node, const std::string& uid, const std::string& ip, int port) {
  auto r = run_command({.argv = {"ip", "netns", "exec", node.node_netns(), "setpriv", "--reuid",
                                 uid, "--regid", uid, "--clear-groups", "bash", "-c",
                                 "exec 3<>/dev/tcp/" + ip + "/" + std::to_string(port) +
                                     " && timeout 3 head -n 1 <&3"},
                        .timeout = 10s});
  REQUIRE(r);
  return r->out;
}

}  // namespace

TEST_CASE("outbound from an enrolled pod lands on its 15001 with the original destination",
          "[e2e]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod b = node.must_add_pod("b", "ambient-demo");
  CHECK(node.pod_has_our_rules(a));
  std::string reply = in_pod_tcp(a, b.ip, 8080);
  CHECK_THAT(reply, Catch::Contains("port=15001"));
  auto rec = find_record(node, 15001, a.ip);
  REQUIRE(rec);
  CHECK((*rec)["uid"] == a.uid);  // A's own ztunnel proxy took it
  CHECK((*rec)["orig_dst"] == b.ip + ":8080");
  // REDIRECT leaves a conntrack NAT entry; eBPF hands the connection to the
  // listener unchanged (docs/redirection.md#ebpf).
  CHECK((*rec)["nat"] == (opts.backend != kEbpf));
}

TEST_CASE("inbound to an enrolled pod lands on its 15006; 15008 is not redirected", "[e2e]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod b = node.must_add_pod("b", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");  // not enrolled: its egress is not captured
  CHECK_FALSE(node.pod_has_our_rules(c));
  CHECK_THAT(in_pod_tcp(c, b.ip, 8080), Catch::Contains("port=15006"));
  auto in = find_record(node, 15006, c.ip);
  REQUIRE(in);
  CHECK((*in)["uid"] == b.uid);
  CHECK((*in)["orig_dst"] == b.ip + ":8080");

  CHECK_THAT(in_pod_tcp(c, b.ip, 15008), Catch::Contains("port=15008"));
  auto hbone = find_record(node, 15008, c.ip);
  REQUIRE(hbone);
  CHECK((*hbone)["nat"] == false);
  CHECK((*hbone)["local"] == b.ip + ":15008");
}

// Also for a pod whose lo is still down at its ADD: the install brings lo
// up before the pod goes to ztunnel, whose DNS listener binds 127.0.0.1
// (docs/node-agent.md#enrollment-pipeline).
TEST_CASE("DNS from an enrolled pod, udp and tcp port 53, lands on 15053", "[e2e]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  const bool lo_down = GENERATE(false, true);
  INFO("backend " << opts.backend << ", lo down at ADD: " << lo_down);
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo", PodSpec{.lo_down = lo_down});
  CHECK_THAT(node.pod_exec(a, {"ip", "link", "show", "lo"}), Catch::Contains(",UP,"));
  std::string udp_reply;
  auto r = in_pod(a, [&]() -> Result<> {
    AMBIENT_ASSIGN_OR_RETURN(udp_reply, udp_exchange(node.gateway(), 53));
    return {};
  });
  REQUIRE(r);
  CHECK_THAT(udp_reply, Catch::Contains("port=15053"));
  CHECK(find_record(node, 15053, a.ip, "udp"));
  CHECK_THAT(in_pod_tcp(a, node.gateway(), 53), Catch::Contains("port=15053"));
}

TEST_CASE("traffic carrying ztunnel's mark 1337 is not captured", "[e2e]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");
  UniqueFd server = listen_in(c, 8080);
  std::thread client([&] {
    auto r = in_pod(a, [&]() -> Result<> {
      AMBIENT_ASSIGN_OR_RETURN(auto ignored, tcp_exchange(c.ip, 8080, 1337));
      (void)ignored;
      return {};
    });
    (void)r;
  });
  std::string peer;
  bool accepted = false;
  if (auto conn = accept_one(server.get(), 3s)) {
    accepted = true;
    peer = conn->peer;
    ssize_t n = ::write(conn->conn.get(), "direct\n", 7);
    (void)n;
  }
  client.join();
  CHECK(accepted);
  CHECK(peer == a.ip);  // reached C itself, straight from A
  CHECK_FALSE(find_record(node, 15001, a.ip));
}

TEST_CASE("a pod in an excluded namespace starts without any of our rules", "[e2e]") {
  NodeOptions opts;
  opts.enroll_namespaces = {"*"};  // even with everything enrolled
  SimNode node(opts);
  Pod k = node.must_add_pod("dns", "kube-system");
  CHECK_FALSE(node.pod_has_our_rules(k));
  CHECK(node.ztunnel_state()["workloads"].empty());
  Pod e = node.must_add_pod("web", "anything");
  CHECK(node.pod_has_our_rules(e));
}

TEST_CASE("ADD fails closed with a clear message when the agent is not running", "[e2e]") {
  SimNode node;
  node.stop_agent();
  Pod p;
  auto r = node.add_pod("a", "ambient-demo", &p);
  REQUIRE_FALSE(r.ok);
  CHECK(r.output["code"] == 999);
  CHECK_THAT(r.output["msg"].get<std::string>(),
             Catch::Contains("istio-cni cmdAdd failed to contact node Istio CNI agent") &&
                 Catch::Contains("pluginevent.sock"));
  CHECK_FALSE(node.pod_has_our_rules(p));
}

TEST_CASE("ADD fails with a clear message when ztunnel is not connected, leaving no rules",
          "[e2e]") {
  NodeOptions opts;
  opts.start_ztunnel = false;
  SimNode node(opts);
  Pod p;
  auto r = node.add_pod("a", "ambient-demo", &p);
  REQUIRE_FALSE(r.ok);
  CHECK_THAT(r.output["msg"].get<std::string>(),
             Catch::Contains("status code 500") && Catch::Contains("no ztunnel connection"));
  CHECK_FALSE(node.pod_has_our_rules(p));
  // Once ztunnel is up the retried sandbox goes through.
  node.start_ztunnel();
  node.wait_ztunnel_ready();
  Pod q = node.must_add_pod("a2", "ambient-demo");
  CHECK(node.pod_has_our_rules(q));
}

TEST_CASE("DEL sends Del to ztunnel, which closes that pod's listeners", "[e2e]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");
  CHECK(eventually([&] { return node.ztunnel_state()["workloads"].contains(a.uid); }));
  CHECK_THAT(in_pod_tcp(a, "127.0.0.1", 15001), Catch::Contains("port=15001"));
  auto d = node.del_pod(a);
  REQUIRE(d.ok);
  CHECK(eventually([&] { return !node.ztunnel_state()["workloads"].contains(a.uid); }));
  CHECK(node.ztunnel_state().value("dels", 0) >= 1);
  CHECK_FALSE(node.pod_has_our_rules(a));
  const bool refused = eventually(  // the drain follows the ACK
      [&] {
        bool now = false;
        auto r = in_pod(a, [&]() -> Result<> {
          auto c = tcp_exchange("127.0.0.1", 15001);
          now = !c;
          return {};
        });
        REQUIRE(r);
        return now;
      },
      2s, 20ms);
  CHECK(refused);
}

// docs/node-agent.md#removal: runtimes recreate sandboxes and send the old
// one's DEL later; it must not unenroll the pod's live sandbox.
TEST_CASE("a recreated sandbox keeps its redirection when the old sandbox's DEL arrives",
          "[e2e][del]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod old = node.must_add_pod("a", "ambient-demo");
  Pod b = node.must_add_pod("b", "ambient-demo");
  Pod now;
  auto re = node.recreate_sandbox(old, &now);
  INFO(re.stderr_text);
  REQUIRE(re.ok);
  CHECK(now.uid == old.uid);
  CHECK(node.pod_has_our_rules(now));
  CHECK_FALSE(node.pod_has_our_rules(old));  // the replaced sandbox lost our rules
  const int dels = node.ztunnel_state().value("dels", 0);
  REQUIRE(node.del_pod(old).ok);  // the runtime stops the old sandbox
  CHECK(node.pod_has_our_rules(now));
  CHECK(node.ztunnel_state().value("dels", 0) == dels);  // ztunnel was told nothing
  CHECK(node.ztunnel_state()["workloads"].contains(now.uid));
  // The live sandbox's traffic is still captured, by the pod's proxy.
  CHECK_THAT(in_pod_tcp(now, b.ip, 8080), Catch::Contains("port=15001"));
  auto rec = find_record(node, 15001, now.ip);
  REQUIRE(rec);
  CHECK((*rec)["uid"] == now.uid);
  // Its own DEL then removes it.
  REQUIRE(node.del_pod(now).ok);
  CHECK(eventually([&] { return !node.ztunnel_state()["workloads"].contains(now.uid); }));
  CHECK_FALSE(node.pod_has_our_rules(now));
}

// docs/node-agent.md#cni-endpoint: only root reaches the plugin's socket.
TEST_CASE("the agent's run dir is 0750 and pluginevent.sock 0600", "[e2e][security]") {
  SimNode node;
  struct stat dir {
  }, sock{};
  REQUIRE(::stat((node.dir() + "/run").c_str(), &dir) == 0);
  REQUIRE(::stat(node.agent_socket().c_str(), &sock) == 0);
  CHECK((dir.st_mode & 07777) == 0750);
  CHECK((sock.st_mode & 07777) == 0600);
}

TEST_CASE("bad inputs get clear errors and the agent keeps serving", "[e2e]") {
  SimNode node;
  const std::string bin = bin_path("istio-cni");
  auto plugin = [&](std::vector<std::string> env, const std::string& in) {
    std::vector<std::string> argv = {"env", "-i"};
    argv.insert(argv.end(), env.begin(), env.end());
    argv.push_back(bin);
    auto r = run_command({.argv = argv, .stdin_data = in});
    REQUIRE(r);
    return std::make_pair(r->exit_code, json::parse(r->out, nullptr, false));
  };
  const std::string conf = R"({"cniVersion":"1.0.0","name":"n","type":"istio-cni",)"
                           R"("ambient_enabled":true,"cni_agent_run_dir":")" +
                           node.dir() + R"(/run"})";
  std::vector<std::string> env = {"CNI_COMMAND=ADD", "CNI_CONTAINERID=x1", "CNI_IFNAME=eth0",
                                  "CNI_PATH=/usr/lib/cni",
                                  "CNI_ARGS=K8S_POD_NAMESPACE=ambient-demo;K8S_POD_NAME=p"};
  SECTION("plugin: malformed stdin") {
    auto [rc, out] = plugin(env, "{{{");
    CHECK(rc == 1);
    CHECK(out["code"] == 4);  // CNI_NETNS is missing too: env is checked first
    auto env2 = env;
    env2.emplace_back("CNI_NETNS=/var/run/netns/none");
    auto [rc2, out2] = plugin(env2, "{{{");
    CHECK(out2["code"] == 6);
  }
  SECTION("plugin: bad netns path reaches the agent and comes back as a clear error") {
    write_file(node.dir() + "/not-a-netns", "x");
    auto env2 = env;
    env2.push_back("CNI_NETNS=" + node.dir() + "/not-a-netns");
    auto [rc, out] = plugin(env2, conf);
    CHECK(rc == 1);
    std::string msg = out["msg"];
    // Outside the runtimes' netns directories (docs/node-agent.md#netns-paths).
    CHECK_THAT(msg, Catch::Contains("not a path a container runtime gives"));
    env2.back() = "CNI_NETNS=/var/run/netns/does-not-exist-" + node.id();
    auto [rc3, out3] = plugin(env2, conf);
    std::string msg3 = out3["msg"];
    CHECK_THAT(msg3, Catch::Contains("No such file or directory"));
  }
  SECTION("agent socket: malformed JSON, huge body, not a netns") {
    cni::UnixHttpClient client;
    auto post = [&](const std::string& body) {
      auto r = client.post(node.agent_socket(), "/cmdadd", body, 5000ms);
      REQUIRE(r);
      return *r;
    };
    auto bad = post("{\"Netns\":");
    CHECK(bad.status == 400);
    CHECK_THAT(bad.body, Catch::Contains("parse error"));
    auto huge = post(std::string(2 << 20, 'x'));
    CHECK(huge.status == 400);
    CHECK_THAT(huge.body, Catch::Contains("too large"));
    auto notns =
        post(R"({"Netns":"/proc/self/status","PodName":"p","PodNamespace":"ambient-demo"})");
    CHECK(notns.status == 500);
    CHECK_THAT(notns.body, Catch::Contains("not a path a container runtime gives"));
  }
  // Whatever came before, the agent is ready and still enrolls pods.
  CHECK_THAT(node.node_http_get(8000, "/readyz"), Catch::StartsWith("HTTP/1.1 200"));
  Pod a = node.must_add_pod("after", "ambient-demo");
  CHECK(node.pod_has_our_rules(a));
}

TEST_CASE("the ztunnel emulator exits on the protocol violations that make ztunnel exit",
          "[e2e][emulator]") {
  // Each violation after a normal snapshot: the NACK ztunnel sends, then exit 1.
  struct Violation {
    std::string name, bytes, message;
    bool with_fd;
  };
  auto v = GENERATE(values<Violation>({
      {"keep after snapshot", std::string("\x2a\x04\x0a\x02u1", 6),
       "pod keep received after snapshot", false},
      {"second snapshot", std::string("\x1a\x00", 2), "pod snapshot received already", false},
      {"add without workload_info", std::string("\x0a\x04\x0a\x02u1", 6),
       "workload_info is required but not present", true},
  }));
  INFO(v.name);
  TempDir dir("amb-emu-");
  std::string sock = dir.path() + "/z.sock";
  UniqueFd listener(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un addr = unix_address(sock);
  REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(listener.get(), 1) == 0);

  auto emulator = std::async(std::launch::async, [&] {
    return run_command({.argv = {bin_path("ztunnel-emulator"), "--uds", sock}, .timeout = 10s});
  });
  pollfd p{listener.get(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 5000) == 1);
  UniqueFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  auto hello = zds::receive_message(conn.get(), 5s);
  REQUIRE(hello);
  CHECK(hello->bytes == std::string("\x08\x01", 2));
  REQUIRE(zds::send_message(conn.get(), std::string("\x1a\x00", 2), {}, 1s));
  auto ack = zds::receive_message(conn.get(), 5s);
  REQUIRE(ack);
  CHECK(ack->bytes == std::string("\x0a\x00", 2));  // empty Ack: success

  std::optional<int> fd;
  UniqueFd self_ns(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
  if (v.with_fd) fd = self_ns.get();
  REQUIRE(zds::send_message(conn.get(), v.bytes, fd, 1s));
  auto nack = zds::receive_message(conn.get(), 5s);
  REQUIRE(nack);
  CHECK_THAT(nack->bytes, Catch::Contains("failure to process message : ProtocolError(") &&
                              Catch::Contains(v.message));
  auto result = emulator.get();
  REQUIRE(result);
  CHECK(result->exit_code == 1);
}

TEST_CASE("dual-stack pods: IPv6 traffic is captured like IPv4 on every backend", "[e2e][ipv6]") {
  NodeOptions opts;
  opts.dual_stack = true;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod b = node.must_add_pod("b", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");
  REQUIRE_FALSE(a.ip6.empty());
  REQUIRE_FALSE(b.ip6.empty());
  // Outbound from A over IPv6: A's 15001, original destination kept.
  CHECK_THAT(in_pod_tcp(a, b.ip6, 8080), Catch::Contains("port=15001"));
  auto out = find_record(node, 15001, a.ip6);
  REQUIRE(out);
  CHECK((*out)["orig_dst"] == "[" + b.ip6 + "]:8080");
  // Inbound to B over IPv6: B's 15006; 15008 reached directly.
  CHECK_THAT(in_pod_tcp(c, b.ip6, 8080), Catch::Contains("port=15006"));
  auto in = find_record(node, 15006, c.ip6);
  REQUIRE(in);
  CHECK((*in)["uid"] == b.uid);
  CHECK((*in)["orig_dst"] == "[" + b.ip6 + "]:8080");
  CHECK_THAT(in_pod_tcp(c, b.ip6, 15008), Catch::Contains("port=15008"));
  CHECK((*find_record(node, 15008, c.ip6))["nat"] == false);
  // DNS over IPv6 to the gateway, TCP and UDP: 15053.
  CHECK_THAT(in_pod_tcp(a, node.gateway6(), 53), Catch::Contains("port=15053"));
  std::string udp6;
  REQUIRE(in_pod(a, [&]() -> Result<> {
    AMBIENT_ASSIGN_OR_RETURN(udp6, udp_exchange(node.gateway6(), 53));
    return {};
  }));
  CHECK_THAT(udp6, Catch::Contains("port=15053"));
  // ztunnel's own (marked) IPv6 traffic is not captured: nothing listens on
  // C:8080, so it is refused instead of answered by A's 15001.
  CHECK(in_pod_tcp_not_captured(a, c.ip6, 8080, "", 1337));
  // IPv4 still works alongside.
  CHECK_THAT(in_pod_tcp(a, b.ip, 8080), Catch::Contains("port=15001"));
}

TEST_CASE("a pod with IPv6 disabled is enrolled; IPv6 routing is skipped cleanly", "[e2e][ipv6]") {
  NodeOptions opts;
  opts.agent_ipv6 = true;
  opts.backend = GENERATE(from_range(kNfTablesBackends));
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo", {.disable_ipv6 = true});
  Pod b = node.must_add_pod("b", "ambient-demo");
  CHECK(node.pod_has_our_rules(a));
  // No IPv6 table 100 at all ("FIB table does not exist") or an empty one.
  auto v6routes = run_command(
      {.argv = {"ip", "netns", "exec", a.netns_name, "ip", "-6", "route", "show", "table", "100"}});
  REQUIRE(v6routes);
  CHECK(v6routes->out.find("local") == std::string::npos);
  CHECK_THAT(node.pod_exec(a, {"ip", "route", "show", "table", "100"}),
             Catch::Contains("local default dev lo"));
  CHECK_THAT(in_pod_tcp(a, b.ip, 8080), Catch::Contains("port=15001"));
}

TEST_CASE(
    "kubelet's probes reach an enrolled pod from 169.254.7.127, unredirected; other host "
    "processes are redirected",
    "[e2e][probe]") {
  NodeOptions opts;
  opts.kubelet_uid = 4242;  // the node netns's "kubelet"
  opts.backend = GENERATE(from_range(kBackends));
  // The chart's topology (the agent's own netns, host work in the node's)
  // and the hostNetwork one.
  opts.agent_host_network = GENERATE(false, true);
  INFO("backend " << opts.backend << ", agent host network " << opts.agent_host_network);
  SimNode node(opts);
  Pod b = node.must_add_pod("b", "ambient-demo");
  UniqueFd server = listen_in(b, 9090);
  // Accepts one connection and answers with the peer address it saw.
  auto serve_one = [&] {
    return std::async(std::launch::async, [&]() -> std::string {
      auto c = accept_one(server.get(), 5s);
      if (!c) return "";
      std::string line = "direct from " + c->peer + "\n";
      ssize_t n = ::write(c->conn.get(), line.data(), line.size());
      (void)n;
      return c->peer;
    });
  };
  auto host_connect = [&](const std::string& uid) { return host_line_as(node, uid, b.ip, 9090); };
  auto seen = serve_one();
  std::string reply = host_connect("4242");
  CHECK_THAT(reply, Catch::StartsWith("direct from 169.254.7.127"));
  CHECK(seen.get() == "169.254.7.127");

  // Any other host process: SNAT does not apply, the pod's inbound capture does.
  std::string other = host_connect("0");
  CHECK_THAT(other, Catch::Contains("port=15006"));
}

TEST_CASE(
    "the app's replies on ztunnel's spoofed inbound connections go back to ztunnel, not "
    "out or to 15001",
    "[e2e]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod b = node.must_add_pod("b", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");
  UniqueFd app = listen_in(b, 9090);
  // ztunnel's inbound leg, as it does it: inside B, a transparent socket
  // carrying mark 1337, bound to the client's (C's) address, to the app.
  std::string reply;
  auto leg = std::async(std::launch::async, [&] {
    return in_pod(b, [&]() -> Result<> {
      UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      int one = 1;
      unsigned mark = 1337;
      if (::setsockopt(s.get(), SOL_IP, IP_TRANSPARENT, &one, sizeof one) != 0) {
        return sys_error("IP_TRANSPARENT");
      }
      if (::setsockopt(s.get(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
        return sys_error("SO_MARK");
      }
      timeval tv{3, 0};
      ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      sockaddr_in src{}, dst{};
      src.sin_family = dst.sin_family = AF_INET;
      ::inet_pton(AF_INET, c.ip.c_str(), &src.sin_addr);
      ::inet_pton(AF_INET, b.ip.c_str(), &dst.sin_addr);
      dst.sin_port = htons(9090);
      if (::bind(s.get(), reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
        return sys_error("bind spoofed source");
      }
      if (::connect(s.get(), reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0) {
        return sys_error("connect to the app");
      }
      char buf[64] = {};
      ssize_t n = ::read(s.get(), buf, sizeof buf - 1);
      if (n > 0) reply.assign(buf, static_cast<size_t>(n));
      return {};
    });
  });
  // The app accepts (it sees C as the client) and answers.
  auto conn = accept_one(app.get(), 3s);
  REQUIRE(conn);
  CHECK(conn->peer == c.ip);
  ssize_t n = ::write(conn->conn.get(), "hello\n", 6);
  CHECK(n == 6);
  AMBIENT_REQUIRE_OK(leg.get());
  CHECK(reply == "hello\n");  // the reply found its way back to the spoofed socket
}

TEST_CASE("an agent killed in the middle of an install leaves all of the pod's rules or none",
          "[e2e][fault]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  const std::string point =
      GENERATE(as<std::string>{}, "after-routing", "after-rules", "after-probe-set");
  INFO("backend " << opts.backend << ", crash " << point);
  SimNode node(opts);
  node.stop_agent();
  node.set_crash_point(point);
  node.start_agent();
  Pod a;
  auto r = node.add_pod("a", "ambient-demo", &a);
  CHECK_FALSE(r.ok);  // the agent died: the ADD fails closed
  REQUIRE(node.wait_agent_exit(5s) == 86);
  // Netfilter state, or eBPF filters, whole or absent, never partial.
  std::string nft = node.pod_exec(a, {"nft", "list", "ruleset"});
  std::string legacy = node.pod_exec(a, {"iptables-legacy-save"});
  bool any = nft.find("ISTIO") != std::string::npos ||
             nft.find("istio-ambient") != std::string::npos ||
             legacy.find("ISTIO") != std::string::npos ||
             node.pod_filters(a).find("amb_") != std::string::npos;
  if (point == "after-routing") {
    CHECK_FALSE(any);
  } else {
    // Whole: exactly what a normal enrollment installs.
    node.set_crash_point("");
    node.start_agent();
    Pod ref = node.must_add_pod("ref", "ambient-demo");
    auto rules_of = [&](const Pod& p) {
      std::string out = without_comments(  // drop timestamps
          node.pod_exec(p, {"nft", "list", "ruleset"}) +
          node.pod_exec(p, {"iptables-legacy-save"}) + node.pod_filters(p));
      return without_counters(out);  // counters differ between pods; the rules must not
    };
    CHECK(any);
    CHECK(rules_of(a) == rules_of(ref));
  }
  // What a runtime does after a failed ADD: DEL. Nothing of ours remains.
  node.set_crash_point("");
  if (!node.agent_running()) node.start_agent();
  REQUIRE(node.del_pod(a).ok);
  CHECK_FALSE(node.pod_has_our_rules(a));
}

// docs/node-agent.md#standalone-mode: the enrolled pods survive an agent
// restart. ztunnel gets them back in its snapshot instead of draining them,
// their rules are checked, not installed a second time, and a pod whose
// netns went away meanwhile is dropped.
TEST_CASE("standalone: after an agent restart ztunnel keeps the enrolled pods, redirected once",
          "[e2e][restart]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod b = node.must_add_pod("b", "ambient-demo");
  Pod gone = node.must_add_pod("gone", "ambient-demo");
  // Everything of ours in a pod, packet counters aside: a second copy of a
  // chain, rule, ip rule or route would show.
  auto ours = [&](const Pod& p) {
    std::string out = without_comments(
        node.pod_exec(p, {"nft", "list", "ruleset"}) + node.pod_exec(p, {"iptables-legacy-save"}) +
        node.pod_exec(p, {"ip", "-4", "rule"}) +
        node.pod_exec(p, {"ip", "-4", "route", "show", "table", "100"}));
    return without_counters(out);
  };
  const std::string rules_before = ours(a);
  REQUIRE(eventually([&] { return node.ztunnel_state()["workloads"].size() == 3; }));
  const json before = node.ztunnel_state()["workloads"];

  node.stop_agent();
  // While the agent is down the runtime removes one pod's netns.
  auto removed = run_command({.argv = {"ip", "netns", "del", gone.netns_name}});
  REQUIRE(removed);
  REQUIRE(removed->exit_code == 0);
  node.start_agent();  // returns once ztunnel's new snapshot is acked
  node.wait_ztunnel_ready();
  REQUIRE(eventually([&] {
    auto s = node.ztunnel_state();
    return s.value("snapshot_received", false) && !s["workloads"].contains(gone.uid);
  }));

  auto state = node.ztunnel_state();
  INFO(state.dump());
  CHECK(state["workloads"].size() == 2);
  for (const Pod* p : {&a, &b}) {
    INFO("pod " << p->name);
    REQUIRE(state["workloads"].contains(p->uid));
    CHECK(state["workloads"][p->uid]["state"] == "Up");
    CHECK(state["workloads"][p->uid]["netns"] == before.at(p->uid).at("netns"));
    // Its proxy ran on through the restart: never drained, so never restarted.
    CHECK_THAT(read_file(node.dir() + "/ztunnel.log"),
               !Catch::Contains("draining proxy uid=" + p->uid + " "));
  }
  CHECK(state.value("keeps", 0) == 0);
  CHECK(ours(a) == rules_before);
  CHECK(count_of(node.pod_exec(a, {"ip", "-4", "rule"}), "0x111/0xfff") == 1);
  CHECK_THAT(node.agent_log(), Catch::Contains("startup: 2 standalone enrollments restored") &&
                                   Catch::Contains("1 dropped"));
  if (opts.backend == "ebpf") {
    // docs/redirection.md#ebpf-loading: the restarted agent loads nothing.
    CHECK_THAT(node.agent_log(), Catch::Contains("programs loaded and attached") &&
                                     Catch::Contains("programs adopted (pinned this boot"));
  }
  // A's traffic is still captured, by A's own proxy.
  CHECK_THAT(in_pod_tcp(a, b.ip, 8080), Catch::Contains("port=15001"));
  auto rec = find_record(node, 15001, a.ip);
  REQUIRE(rec);
  CHECK((*rec)["uid"] == a.uid);
  // A restored pod leaves the mesh on its DEL like any other.
  REQUIRE(node.del_pod(b).ok);
  CHECK(eventually([&] { return !node.ztunnel_state()["workloads"].contains(b.uid); }));
  CHECK_FALSE(node.pod_has_our_rules(b));
}

// docs/cni-plugin.md#log-channel: the plugin's lines reach the agent's log.
TEST_CASE("the plugin's log lines reach the agent's log under the cni-plugin scope", "[e2e][log]") {
  SimNode node;
  struct stat sock {};
  REQUIRE(::stat((node.dir() + "/run/log.sock").c_str(), &sock) == 0);
  CHECK((sock.st_mode & 07777) == 0600);  // docs/node-agent.md#socket-security
  Pod p = node.must_add_pod("logged", "ambient-demo");
  // Sent after the plugin has answered, so it may land a moment later.
  const std::string line =
      "\tinfo\tcni-plugin\tpod enrolled or skipped by the node agent\tpod=" + p.ns + "/" + p.name +
      "\n";
  const bool arrived = eventually([&] { return node.agent_log().find(line) != std::string::npos; });
  INFO(node.agent_log());
  CHECK(arrived);
}

// docs/architecture.md#testing: the capture core under each primary CNI shape.
TEST_CASE("the capture core works under ptp, macvlan and a portmap/tuning/bandwidth chain",
          "[e2e][shapes]") {
  NodeOptions opts;
  opts.kubelet_uid = 4242;
  opts.backend = GENERATE(as<std::string>{}, kNftables, kIptablesNft);
  opts.primary = GENERATE(PrimaryCni::Ptp, PrimaryCni::Macvlan, PrimaryCni::BridgeChain);
  INFO("backend " << opts.backend << ", primary CNI shape " << static_cast<int>(opts.primary));
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod b = node.must_add_pod("b", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");
  CHECK(node.pod_has_our_rules(a));
  CHECK_FALSE(node.pod_has_our_rules(c));
  // Outbound: 15001, original destination kept.
  CHECK_THAT(in_pod_tcp(a, c.ip, 8080), Catch::Contains("port=15001"));
  auto rec = find_record(node, 15001, a.ip);
  REQUIRE(rec);
  CHECK((*rec)["orig_dst"] == c.ip + ":8080");
  // Inbound from outside the mesh: 15006; to 15008 (HBONE): not redirected.
  CHECK_THAT(in_pod_tcp(c, b.ip, 9090), Catch::Contains("port=15006"));
  CHECK_THAT(in_pod_tcp(c, b.ip, 15008), Catch::Contains("port=15008"));
  // DNS, udp and tcp: 15053.
  std::string udp;
  AMBIENT_REQUIRE_OK(in_pod(a, [&]() -> Result<> {
    AMBIENT_ASSIGN_OR_RETURN(udp, udp_exchange(node.gateway(), 53));
    return {};
  }));
  CHECK_THAT(udp, Catch::Contains("port=15053"));
  CHECK_THAT(in_pod_tcp(a, node.gateway(), 53), Catch::Contains("port=15053"));
  // Kubelet's probe from the node: SNATed and let through to the app.
  UniqueFd app = listen_in(b, 9091);
  auto seen = std::async(std::launch::async, [&]() -> std::string {
    auto conn = accept_one(app.get(), 5s);
    if (!conn) return "";
    ssize_t n = ::write(conn->conn.get(), "app\n", 4);
    (void)n;
    return conn->peer;
  });
  CHECK(host_line_as(node, "4242", b.ip, 9091) == "app\n");
  CHECK(seen.get() == "169.254.7.127");
}

// docs/reliability.md#faults: the runtime deletes a pod's netns while the
// agent enrolls it (a sandbox torn down at once), at a different moment each
// round. The ADD may fail or succeed (the agent holds the netns open, so
// what it started it finishes); the runtime's DEL that follows must leave
// nothing: no ztunnel workload, no probe-set entry, no pinned link, and no
// netns held open by the agent.
TEST_CASE("a pod netns deleted in the middle of its enrollment leaves nothing once DEL is sent",
          "[e2e][fault]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod warm = node.must_add_pod("warm", "ambient-demo");  // the agent's pools, made once
  REQUIRE(node.del_pod(warm).ok);
  node.forget_pod(warm);
  std::this_thread::sleep_for(500ms);  // libnftables contexts go 100 ms after use
  const auto fds_before = agent_fd_targets(node.agent_pid());
  const auto links_before =
      files_under(node.bpf_pin_dir().empty() ? "" : node.bpf_pin_dir() + "/ambient");

  std::vector<std::string> uids;
  int succeeded = 0;
  // From before the chain's first plugin to after our agent's answer
  // (an ADD takes some 20 to 60 ms here).
  std::map<std::string, int> outcomes;  // by the step that saw the netns gone
  for (int delay_ms : {0, 5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 80}) {
    Pod p = node.prepare_pod("gone-" + std::to_string(delay_ms), "ambient-demo");
    uids.push_back(p.uid);
    std::thread runtime([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      (void)run_command({.argv = {"ip", "netns", "del", p.netns_name}});
    });
    const AddResult add = node.cni_command("add", p);
    runtime.join();
    if (add.ok) {
      ++succeeded;
      ++outcomes["ADD succeeded"];
    } else {
      const std::string msg = add.output.is_object() ? add.output.value("msg", "") : "";
      ++outcomes[msg.substr(0, 60)];
      INFO("ADD after " << delay_ms << " ms: " << add.output.dump() << add.stderr_text);
      CHECK_FALSE(add.output.dump().empty());
    }
    const AddResult del = node.cni_command("del", p);
    INFO("DEL: " << del.output.dump() << del.stderr_text);
    CHECK(del.ok);  // DEL never fails
    node.forget_pod(p);
  }
  std::this_thread::sleep_for(500ms);
  REQUIRE(node.agent_running());
  const json workloads = node.ztunnel_state()["workloads"];
  const std::string host = node.node_exec({"nft", "list", "ruleset"}) +
                           node.node_exec({"ipset", "list"}) +
                           node.node_exec({"iptables-legacy-save"});
  for (const auto& uid : uids) {
    CHECK_FALSE(workloads.contains(uid));
    CHECK(host.find(uid) == std::string::npos);
  }
  CHECK(files_under(node.bpf_pin_dir().empty() ? "" : node.bpf_pin_dir() + "/ambient") ==
        links_before);
  // Every netns and socket it opened is closed again.
  std::vector<std::string> kept;
  eventually(
      [&] {
        kept = leaked_fds(fds_before, agent_fd_targets(node.agent_pid()));
        return kept.empty();
      },
      5s, 100ms);
  INFO("fds the agent kept: " << text::join(kept, " "));
  CHECK(kept.empty());
  std::string summary;
  for (const auto& [what, n] : outcomes) summary += "\n  " + std::to_string(n) + "x " + what;
  WARN(opts.backend << ": " << succeeded << " of " << uids.size()
                    << " ADDs succeeded with their netns deleted under them:" << summary);
}
