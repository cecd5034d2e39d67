#include "cri_client.h"

#include <grpcpp/grpcpp.h>

#include <nlohmann/json.hpp>
#include <utility>

namespace ambient::cri {
namespace v1 = runtime::v1;
using nlohmann::json;

namespace {

Errc errc_of(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      return Errc::InvalidArgument;
    case grpc::StatusCode::NOT_FOUND:
      return Errc::NotFound;
    case grpc::StatusCode::UNAVAILABLE:
      return Errc::Unavailable;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return Errc::Timeout;
    default:
      return Errc::Internal;
  }
}

std::string code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    default:
      return "code " + std::to_string(static_cast<int>(code));
  }
}

// Runs one unary call with its own deadline; the error names the call, so a
// test failure says which step of the pod lifecycle the runtime refused.
template <class Req, class Resp, class Stub, class Method>
Result<Resp> call(const char* name, Stub* stub, Method method, const Req& req,
                  std::chrono::milliseconds deadline) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  Resp resp;
  grpc::Status st = (stub->*method)(&ctx, req, &resp);
  if (!st.ok()) {
    return make_error(
        errc_of(st.error_code()),
        std::string(name) + ": " + code_name(st.error_code()) + ": " + st.error_message());
  }
  return resp;
}

// containerd's verbose sandbox status: {"pid": N, "runtimeSpec": {"linux":
// {"namespaces": [{"type": "network", "path": ...}]}}, ...} under "info".
void read_verbose_info(SandboxStatus& out) {
  auto it = out.info.find("info");
  if (it == out.info.end()) return;
  json info = json::parse(it->second, nullptr, false);
  if (!info.is_object()) return;
  out.pid = info.value("pid", 0);
  const json* ns = nullptr;
  if (auto spec = info.find("runtimeSpec"); spec != info.end() && spec->contains("linux")) {
    ns = &(*spec)["linux"]["namespaces"];
  }
  if (ns == nullptr || !ns->is_array()) return;
  for (const json& n : *ns) {
    if (n.value("type", "") == "network") out.netns_path = n.value("path", "");
  }
}

}  // namespace

v1::PodSandboxConfig sandbox_config(const PodSandboxSpec& spec) {
  v1::PodSandboxConfig c;
  auto* md = c.mutable_metadata();
  md->set_name(spec.name);
  md->set_uid(spec.uid);
  md->set_namespace_(spec.ns);
  md->set_attempt(spec.attempt);
  c.set_hostname(spec.hostname.empty() ? spec.name : spec.hostname);
  c.set_log_directory(spec.log_directory);
  auto& labels = *c.mutable_labels();
  for (const auto& [k, v] : spec.labels) labels[k] = v;
  labels["io.kubernetes.pod.name"] = spec.name;
  labels["io.kubernetes.pod.namespace"] = spec.ns;
  labels["io.kubernetes.pod.uid"] = spec.uid;
  auto& annotations = *c.mutable_annotations();
  for (const auto& [k, v] : spec.annotations) annotations[k] = v;
  auto* linux = c.mutable_linux();
  linux->set_cgroup_parent(spec.cgroup_parent);
  auto* nso = linux->mutable_security_context()->mutable_namespace_options();
  nso->set_network(spec.host_network ? v1::NODE : v1::POD);
  nso->set_pid(v1::CONTAINER);
  nso->set_ipc(v1::POD);
  return c;
}

v1::ContainerConfig container_config(const ContainerSpec& spec) {
  v1::ContainerConfig c;
  c.mutable_metadata()->set_name(spec.name);
  c.mutable_metadata()->set_attempt(spec.attempt);
  c.mutable_image()->set_image(spec.image);
  for (const auto& a : spec.command) c.add_command(a);
  for (const auto& a : spec.args) c.add_args(a);
  for (const auto& [k, v] : spec.env) {
    auto* kv = c.add_envs();
    kv->set_key(k);
    kv->set_value(v);
  }
  (*c.mutable_labels())["io.kubernetes.container.name"] = spec.name;
  c.set_log_path(spec.log_path.empty() ? spec.name + "/" + std::to_string(spec.attempt) + ".log"
                                       : spec.log_path);
  auto* sc = c.mutable_linux()->mutable_security_context();
  for (const auto& cap : spec.add_capabilities)
    sc->mutable_capabilities()->add_add_capabilities(cap);
  if (spec.run_as_user >= 0) sc->mutable_run_as_user()->set_value(spec.run_as_user);
  return c;
}

CriClient::CriClient(const std::string& socket_path, std::chrono::milliseconds deadline)
    : socket_path_(socket_path), deadline_(deadline) {
  reconnect();
}

void CriClient::reconnect() {
  grpc::ChannelArguments args;
  // Its own connection, never one shared with another client of the same
  // socket that may be waiting out a reconnect backoff.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // gRPC's default backoff (1 s, growing) would make calls fail for seconds
  // after a containerd restart; the socket is local.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  auto channel =
      grpc::CreateCustomChannel("unix:" + socket_path_, grpc::InsecureChannelCredentials(), args);
  runtime_ = v1::RuntimeService::NewStub(channel);
  images_ = v1::ImageService::NewStub(channel);
}

Result<v1::VersionResponse> CriClient::version(std::chrono::milliseconds deadline) {
  v1::VersionRequest req;
  req.set_version("v1");
  return call<v1::VersionRequest, v1::VersionResponse>(
      "Version", runtime_.get(), &v1::RuntimeService::Stub::Version, req, deadline);
}

Result<std::string> CriClient::run_pod_sandbox(const PodSandboxSpec& spec) {
  return run_pod_sandbox(sandbox_config(spec));
}

Result<std::string> CriClient::run_pod_sandbox(const v1::PodSandboxConfig& config) {
  v1::RunPodSandboxRequest req;
  *req.mutable_config() = config;
  AMBIENT_ASSIGN_OR_RETURN(
      auto resp, (call<v1::RunPodSandboxRequest, v1::RunPodSandboxResponse>(
                     "RunPodSandbox", runtime_.get(), &v1::RuntimeService::Stub::RunPodSandbox, req,
                     deadline_)));
  return resp.pod_sandbox_id();
}

Result<> CriClient::stop_pod_sandbox(const std::string& id) {
  v1::StopPodSandboxRequest req;
  req.set_pod_sandbox_id(id);
  AMBIENT_RETURN_IF_ERROR((call<v1::StopPodSandboxRequest, v1::StopPodSandboxResponse>(
      "StopPodSandbox", runtime_.get(), &v1::RuntimeService::Stub::StopPodSandbox, req,
      deadline_)));
  return {};
}

Result<> CriClient::remove_pod_sandbox(const std::string& id) {
  v1::RemovePodSandboxRequest req;
  req.set_pod_sandbox_id(id);
  AMBIENT_RETURN_IF_ERROR((call<v1::RemovePodSandboxRequest, v1::RemovePodSandboxResponse>(
      "RemovePodSandbox", runtime_.get(), &v1::RuntimeService::Stub::RemovePodSandbox, req,
      deadline_)));
  return {};
}

Result<SandboxStatus> CriClient::pod_sandbox_status(const std::string& id) {
  v1::PodSandboxStatusRequest req;
  req.set_pod_sandbox_id(id);
  req.set_verbose(true);
  AMBIENT_ASSIGN_OR_RETURN(auto resp,
                           (call<v1::PodSandboxStatusRequest, v1::PodSandboxStatusResponse>(
                               "PodSandboxStatus", runtime_.get(),
                               &v1::RuntimeService::Stub::PodSandboxStatus, req, deadline_)));
  SandboxStatus out;
  const auto& st = resp.status();
  out.id = st.id();
  out.ready = st.state() == v1::SANDBOX_READY;
  out.ip = st.network().ip();
  if (!out.ip.empty()) out.ips.push_back(out.ip);
  for (const auto& extra : st.network().additional_ips()) out.ips.push_back(extra.ip());
  out.info.insert(resp.info().begin(), resp.info().end());
  read_verbose_info(out);
  return out;
}

Result<std::vector<v1::PodSandbox>> CriClient::list_pod_sandbox() {
  AMBIENT_ASSIGN_OR_RETURN(
      auto resp, (call<v1::ListPodSandboxRequest, v1::ListPodSandboxResponse>(
                     "ListPodSandbox", runtime_.get(), &v1::RuntimeService::Stub::ListPodSandbox,
                     v1::ListPodSandboxRequest{}, deadline_)));
  return std::vector<v1::PodSandbox>(resp.items().begin(), resp.items().end());
}

Result<std::string> CriClient::create_container(const std::string& sandbox_id,
                                                const ContainerSpec& spec,
                                                const PodSandboxSpec& sandbox) {
  return create_container(sandbox_id, container_config(spec), sandbox_config(sandbox));
}

Result<std::string> CriClient::create_container(const std::string& sandbox_id,
                                                const v1::ContainerConfig& config,
                                                const v1::PodSandboxConfig& sandbox) {
  v1::CreateContainerRequest req;
  req.set_pod_sandbox_id(sandbox_id);
  *req.mutable_config() = config;
  *req.mutable_sandbox_config() = sandbox;
  AMBIENT_ASSIGN_OR_RETURN(
      auto resp, (call<v1::CreateContainerRequest, v1::CreateContainerResponse>(
                     "CreateContainer", runtime_.get(), &v1::RuntimeService::Stub::CreateContainer,
                     req, deadline_)));
  return resp.container_id();
}

Result<> CriClient::start_container(const std::string& id) {
  v1::StartContainerRequest req;
  req.set_container_id(id);
  AMBIENT_RETURN_IF_ERROR((call<v1::StartContainerRequest, v1::StartContainerResponse>(
      "StartContainer", runtime_.get(), &v1::RuntimeService::Stub::StartContainer, req,
      deadline_)));
  return {};
}

Result<> CriClient::stop_container(const std::string& id, std::chrono::seconds grace) {
  v1::StopContainerRequest req;
  req.set_container_id(id);
  req.set_timeout(grace.count());
  AMBIENT_RETURN_IF_ERROR((call<v1::StopContainerRequest, v1::StopContainerResponse>(
      "StopContainer", runtime_.get(), &v1::RuntimeService::Stub::StopContainer, req,
      deadline_ + grace)));
  return {};
}

Result<> CriClient::remove_container(const std::string& id) {
  v1::RemoveContainerRequest req;
  req.set_container_id(id);
  AMBIENT_RETURN_IF_ERROR((call<v1::RemoveContainerRequest, v1::RemoveContainerResponse>(
      "RemoveContainer", runtime_.get(), &v1::RuntimeService::Stub::RemoveContainer, req,
      deadline_)));
  return {};
}

Result<ContainerStatus> CriClient::container_status(const std::string& id) {
  v1::ContainerStatusRequest req;
  req.set_container_id(id);
  AMBIENT_ASSIGN_OR_RETURN(
      auto resp, (call<v1::ContainerStatusRequest, v1::ContainerStatusResponse>(
                     "ContainerStatus", runtime_.get(), &v1::RuntimeService::Stub::ContainerStatus,
                     req, deadline_)));
  const auto& st = resp.status();
  return ContainerStatus{.id = st.id(),
                         .state = st.state(),
                         .exit_code = st.exit_code(),
                         .reason = st.reason(),
                         .message = st.message(),
                         .log_path = st.log_path()};
}

Result<ExecResult> CriClient::exec_sync(const std::string& container_id,
                                        const std::vector<std::string>& argv,
                                        std::chrono::seconds timeout) {
  v1::ExecSyncRequest req;
  req.set_container_id(container_id);
  for (const auto& a : argv) req.add_cmd(a);
  req.set_timeout(timeout.count());
  // The runtime enforces `timeout`; the call's deadline only guards against
  // a runtime that never answers.
  AMBIENT_ASSIGN_OR_RETURN(auto resp,
                           (call<v1::ExecSyncRequest, v1::ExecSyncResponse>(
                               "ExecSync", runtime_.get(), &v1::RuntimeService::Stub::ExecSync, req,
                               deadline_ + timeout)));
  return ExecResult{.exit_code = resp.exit_code(), .out = resp.stdout(), .err = resp.stderr()};
}

Result<std::vector<v1::Image>> CriClient::list_images() {
  AMBIENT_ASSIGN_OR_RETURN(auto resp,
                           (call<v1::ListImagesRequest, v1::ListImagesResponse>(
                               "ListImages", images_.get(), &v1::ImageService::Stub::ListImages,
                               v1::ListImagesRequest{}, deadline_)));
  return std::vector<v1::Image>(resp.images().begin(), resp.images().end());
}

}  // namespace ambient::cri
