// The admin API's service and server over a scripted source, through real
// gRPC on a Unix socket: lookups, error codes, verify, the event stream,
// and who may connect.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "admin.grpc.pb.h"
#include "admin/server.h"
#include "support/temp_dir.h"
#include "unit/admin/fake_source.h"

using namespace ambient;
using namespace ambient::test;
namespace v1 = ambient::admin::v1;

namespace {

struct Served {
  TempDir dir;
  FakeSource src;
  std::unique_ptr<admin::AdminServer> server;
  std::unique_ptr<v1::Admin::Stub> stub;

  Served() {
    populate(src);
    const std::string path = dir.path() + "/admin.sock";
    auto s = admin::AdminServer::start({.socket_path = path}, src);
    REQUIRE(s);
    server = std::move(*s);
    stub =
        v1::Admin::NewStub(grpc::CreateChannel("unix:" + path, grpc::InsecureChannelCredentials()));
  }
};

std::unique_ptr<grpc::ClientContext> ctx() {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return c;
}

}  // namespace

TEST_CASE("admin ListPods lists every known pod sorted, and filters by namespace", "[admin]") {
  Served s;
  v1::ListPodsResponse r;
  REQUIRE(s.stub->ListPods(ctx().get(), {}, &r).ok());
  REQUIRE(r.pods_size() == 3);
  CHECK(r.pods(0).name() == "api");
  CHECK(r.pods(1).name() == "web");
  CHECK(r.pods(2).namespace_() == "other");
  v1::ListPodsRequest req;
  req.set_namespace_("other");
  v1::ListPodsResponse only;
  REQUIRE(s.stub->ListPods(ctx().get(), req, &only).ok());
  REQUIRE(only.pods_size() == 1);
  CHECK(only.pods(0).state() == "failed");
  req.set_namespace_("Bad Name!");
  CHECK(s.stub->ListPods(ctx().get(), req, &only).error_code() ==
        grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_CASE("admin GetPod finds a pod by namespace/name and names an unknown one", "[admin]") {
  Served s;
  v1::GetPodRequest req;
  req.set_namespace_("ambient-demo");
  req.set_name("web");
  v1::Pod p;
  REQUIRE(s.stub->GetPod(ctx().get(), req, &p).ok());
  CHECK(p.uid() == "uid-web");
  CHECK(p.steps_size() == 3);

  req.set_name("nope");
  auto st = s.stub->GetPod(ctx().get(), req, &p);
  CHECK(st.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK_THAT(st.error_message(), Catch::Contains("ambient-demo/nope"));

  req.set_name("");
  CHECK(s.stub->GetPod(ctx().get(), req, &p).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  req.set_name("a/b");
  CHECK(s.stub->GetPod(ctx().get(), req, &p).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_CASE("admin Trace checks the request and hands known pods to the source", "[admin]") {
  Served s;
  v1::TraceRequest req;
  req.set_namespace_("ambient-demo");
  req.set_name("web");
  v1::TraceResponse r;
  // Outbound without --to, inbound without --port: refused before any probe.
  CHECK(s.stub->Trace(ctx().get(), req, &r).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  req.set_inbound(true);
  CHECK(s.stub->Trace(ctx().get(), req, &r).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  req.set_port(8080);
  REQUIRE(s.stub->Trace(ctx().get(), req, &r).ok());
  CHECK(s.src.traced_uid == "uid-web");
  CHECK(r.enrolled());

  // A failed enrollment is not a pod to probe by the agent's netns.
  req.set_namespace_("other");
  req.set_name("db");
  CHECK(s.stub->Trace(ctx().get(), req, &r).error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(s.src.traced_uid.empty());
  // Unknown, but with its netns: traced, not enrolled.
  req.set_netns("/var/run/netns/cni-db");
  REQUIRE(s.stub->Trace(ctx().get(), req, &r).ok());
  CHECK_FALSE(r.enrolled());
  req.set_name("Bad!");
  CHECK(s.stub->Trace(ctx().get(), req, &r).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_CASE("admin Verify reports each pod's problems; --all skips failed pods", "[admin]") {
  Served s;
  s.src.problems["uid-web"] = {"nftables: table inet istio-inpod missing"};
  s.src.verify_errors["uid-api"] = "netns unknown";
  v1::VerifyRequest all;
  all.set_all(true);
  v1::VerifyResponse r;
  REQUIRE(s.stub->Verify(ctx().get(), all, &r).ok());
  REQUIRE(r.pods_size() == 2);  // the failed pod has nothing of ours to verify
  CHECK(r.pods(0).name() == "api");
  CHECK_FALSE(r.pods(0).clean());
  CHECK(r.pods(0).error() == "netns unknown");
  CHECK(r.pods(1).name() == "web");
  CHECK_FALSE(r.pods(1).clean());
  REQUIRE(r.pods(1).problems_size() == 1);

  s.src.problems.clear();
  v1::VerifyRequest one;
  one.set_namespace_("ambient-demo");
  one.set_name("web");
  v1::VerifyResponse clean;
  REQUIRE(s.stub->Verify(ctx().get(), one, &clean).ok());
  REQUIRE(clean.pods_size() == 1);
  CHECK(clean.pods(0).clean());
  CHECK(clean.pods(0).uid() == "uid-web");

  one.set_namespace_("other");
  one.set_name("db");
  auto st = s.stub->Verify(ctx().get(), one, &clean);
  CHECK(st.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(st.error_message(), Catch::Contains("not enrolled"));
}

TEST_CASE("admin WatchEvents streams what is published after the stream opened", "[admin]") {
  Served s;
  grpc::ClientContext c;
  auto reader = s.stub->WatchEvents(&c, {});
  // The server subscribes before it sends the stream's headers.
  reader->WaitForInitialMetadata();
  s.src.hub.publish(admin::pod_event("enrolled", "ambient-demo", "web", "uid-web", "rules 1 ms"));
  s.src.hub.publish(admin::pod_event("removed", "ambient-demo", "web", "uid-web", ""));
  v1::Event e;
  REQUIRE(reader->Read(&e));
  CHECK(e.kind() == "enrolled");
  CHECK_FALSE(e.time().empty());
  REQUIRE(reader->Read(&e));
  CHECK(e.kind() == "removed");
  c.TryCancel();
  while (reader->Read(&e)) {
  }
  (void)reader->Finish();
}

TEST_CASE("a slow event watcher loses events, never holds up the publisher", "[admin]") {
  admin::EventHub hub;
  auto sub = hub.subscribe();
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < admin::EventHub::kQueueLimit + 10; ++i) {
    hub.publish(admin::pod_event("enrolled", "ns", "p" + std::to_string(i), "u", ""));
  }
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(1));
  size_t got = 0;
  std::optional<admin::v1::Event> e;
  while ((e = sub->next(std::chrono::milliseconds(0))) && e->kind() == "enrolled") ++got;
  CHECK(got == admin::EventHub::kQueueLimit);
  REQUIRE(e);
  CHECK(e->kind() == "dropped");
  CHECK_THAT(e->message(), Catch::StartsWith("10 events dropped"));
  hub.unsubscribe(sub);
  CHECK(hub.subscribers() == 0);
}

TEST_CASE("the admin socket is made 0600 and removed when the server stops", "[admin]") {
  TempDir dir;
  FakeSource src;
  const std::string path = dir.path() + "/admin.sock";
  {
    auto s = admin::AdminServer::start({.socket_path = path}, src);
    REQUIRE(s);
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
  }
  struct stat st {};
  CHECK(::stat(path.c_str(), &st) != 0);
}

TEST_CASE("admin peers: root, the agent's own uid and --admin-uid only", "[admin]") {
  CHECK(admin::peer_allowed(0, std::nullopt));
  CHECK(admin::peer_allowed(::geteuid(), std::nullopt));
  const uid_t stranger = ::geteuid() == 65534 ? 65533 : 65534;
  CHECK_FALSE(admin::peer_allowed(stranger, std::nullopt));
  CHECK(admin::peer_allowed(stranger, stranger));
  CHECK_FALSE(admin::peer_allowed(stranger, 1000 == stranger ? 1001 : 1000));
}
