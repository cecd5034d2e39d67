#include "admin/service.h"

#include <algorithm>
#include <optional>
#include <tuple>

namespace ambient::admin {

namespace {

std::string pod_key(const std::string& ns, const std::string& name) { return ns + "/" + name; }

// Kubernetes names: DNS labels and subdomains, at most 253 characters.
bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           (c >= 'A' && c <= 'Z') || c == '_';
  });
}

grpc::Status check_pod_name(const std::string& ns, const std::string& name) {
  if (!valid_name(ns) || !valid_name(name)) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "a pod is named NAMESPACE/NAME (each a Kubernetes name), not \"" + pod_key(ns, name) +
                "\""};
  }
  return grpc::Status::OK;
}

// Enrolled (or known) pods are sorted by namespace, then name, so listings
// are stable between calls.
std::vector<v1::Pod> sorted_pods(const AdminSource& src) {
  auto pods = src.pods();
  std::sort(pods.begin(), pods.end(), [](const v1::Pod& a, const v1::Pod& b) {
    return std::tie(a.namespace_(), a.name(), a.uid()) <
           std::tie(b.namespace_(), b.name(), b.uid());
  });
  return pods;
}

std::optional<v1::Pod> find_pod(const AdminSource& src, const std::string& ns,
                                const std::string& name) {
  std::optional<v1::Pod> found;
  for (auto& p : src.pods()) {
    if (p.namespace_() != ns || p.name() != name) continue;
    // An enrolled entry wins over a failed attempt of the same name.
    if (!found || (found->state() == "failed" && p.state() != "failed")) found = std::move(p);
  }
  return found;
}

grpc::Status unknown_pod(const std::string& ns, const std::string& name) {
  return {grpc::StatusCode::NOT_FOUND,
          "pod " + pod_key(ns, name) +
              " is not known to the agent: not enrolled on this node, and no failed enrollment "
              "recorded (is it on this node? `ambientctl pods` lists what the agent knows)"};
}

}  // namespace

grpc::Status to_status(const Error& e) {
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  if (e.code == Errc::InvalidArgument) code = grpc::StatusCode::INVALID_ARGUMENT;
  if (e.code == Errc::NotFound) code = grpc::StatusCode::NOT_FOUND;
  if (e.code == Errc::Unavailable || e.code == Errc::Timeout) {
    code = grpc::StatusCode::UNAVAILABLE;
  }
  return {code, e.describe()};
}

grpc::Status AdminService::GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                                     v1::Status* out) {
  *out = src_.status();
  return grpc::Status::OK;
}

grpc::Status AdminService::ListPods(grpc::ServerContext*, const v1::ListPodsRequest* req,
                                    v1::ListPodsResponse* out) {
  if (!req->namespace_().empty() && !valid_name(req->namespace_())) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "\"" + req->namespace_() + "\" is not a Kubernetes namespace name"};
  }
  for (auto& p : sorted_pods(src_)) {
    if (req->namespace_().empty() || p.namespace_() == req->namespace_()) {
      *out->add_pods() = std::move(p);
    }
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::GetPod(grpc::ServerContext*, const v1::GetPodRequest* req,
                                  v1::Pod* out) {
  if (auto s = check_pod_name(req->namespace_(), req->name()); !s.ok()) return s;
  auto p = find_pod(src_, req->namespace_(), req->name());
  if (!p) return unknown_pod(req->namespace_(), req->name());
  *out = std::move(*p);
  return grpc::Status::OK;
}

grpc::Status AdminService::Verify(grpc::ServerContext*, const v1::VerifyRequest* req,
                                  v1::VerifyResponse* out) {
  std::vector<v1::Pod> targets;
  if (req->all()) {
    for (auto& p : sorted_pods(src_)) {
      if (p.state() != "failed") targets.push_back(std::move(p));
    }
  } else {
    if (auto s = check_pod_name(req->namespace_(), req->name()); !s.ok()) return s;
    auto p = find_pod(src_, req->namespace_(), req->name());
    if (!p) return unknown_pod(req->namespace_(), req->name());
    if (p->state() == "failed") {
      return {grpc::StatusCode::FAILED_PRECONDITION,
              "pod " + pod_key(p->namespace_(), p->name()) +
                  " is not enrolled (its last enrollment failed: " + p->last_error() +
                  "): there is nothing of ours to verify"};
    }
    targets.push_back(std::move(*p));
  }
  for (const auto& p : targets) {
    auto r = src_.verify(p);
    v1::PodVerify* v = out->add_pods();
    if (r) {
      *v = std::move(*r);
    } else {
      v->set_error(r.error().describe());
    }
    v->set_namespace_(p.namespace_());
    v->set_name(p.name());
    v->set_uid(p.uid());
    v->set_clean(r && v->problems().empty());
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::Trace(grpc::ServerContext*, const v1::TraceRequest* req,
                                 v1::TraceResponse* out) {
  if (auto s = check_pod_name(req->namespace_(), req->name()); !s.ok()) return s;
  if (req->inbound() ? req->port() == 0 || req->port() > 65535 : req->to().empty()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, req->inbound()
                                                    ? "an inbound trace needs --port (1-65535)"
                                                    : "an outbound trace needs --to IP:PORT"};
  }
  auto p = find_pod(src_, req->namespace_(), req->name());
  auto r = src_.trace(p && p->state() != "failed" ? &*p : nullptr, *req);
  if (!r) return to_status(r.error());
  *out = std::move(*r);
  return grpc::Status::OK;
}

grpc::Status AdminService::WatchEvents(grpc::ServerContext* ctx, const v1::WatchEventsRequest*,
                                       grpc::ServerWriter<v1::Event>* out) {
  auto& hub = src_.events();
  auto sub = hub.subscribe();
  // The subscription is made before the first write, so a client that saw
  // the stream open misses nothing published after.
  out->SendInitialMetadata();
  while (!stopping_ && !ctx->IsCancelled()) {
    auto e = sub->next(std::chrono::milliseconds(200));
    if (!e) continue;
    if (!out->Write(*e)) break;  // the client went away
  }
  hub.unsubscribe(sub);
  return grpc::Status::OK;
}

}  // namespace ambient::admin
