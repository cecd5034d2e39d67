// The admin API's gRPC service (proto/admin.proto) over an AdminSource:
// request checks, pod lookup by namespace/name, and one mapping of errors
// to gRPC codes (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, INTERNAL), each
// with a message meant for the operator reading it.
//
// RefusingService answers every call PERMISSION_DENIED: the admin server
// hands it the connections whose peer failed the credentials check, so a
// refused caller learns why instead of seeing a dropped connection.
#pragma once

#include <atomic>
#include <string>

#include "admin.grpc.pb.h"
#include "admin/source.h"

namespace ambient::admin {

class AdminService final : public v1::Admin::Service {
 public:
  explicit AdminService(AdminSource& src) : src_(src) {}

  grpc::Status GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                         v1::Status* out) override;
  grpc::Status ListPods(grpc::ServerContext*, const v1::ListPodsRequest* req,
                        v1::ListPodsResponse* out) override;
  grpc::Status GetPod(grpc::ServerContext*, const v1::GetPodRequest* req, v1::Pod* out) override;
  grpc::Status Verify(grpc::ServerContext*, const v1::VerifyRequest* req,
                      v1::VerifyResponse* out) override;
  grpc::Status Trace(grpc::ServerContext*, const v1::TraceRequest* req,
                     v1::TraceResponse* out) override;
  grpc::Status WatchEvents(grpc::ServerContext* ctx, const v1::WatchEventsRequest*,
                           grpc::ServerWriter<v1::Event>* out) override;

  // Ends every WatchEvents stream (agent shutdown).
  void stop() { stopping_ = true; }

 private:
  AdminSource& src_;
  std::atomic<bool> stopping_{false};
};

class RefusingService final : public v1::Admin::Service {
 public:
  explicit RefusingService(std::string why) : why_(std::move(why)) {}
  grpc::Status GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*, v1::Status*) override {
    return refused();
  }
  grpc::Status ListPods(grpc::ServerContext*, const v1::ListPodsRequest*,
                        v1::ListPodsResponse*) override {
    return refused();
  }
  grpc::Status GetPod(grpc::ServerContext*, const v1::GetPodRequest*, v1::Pod*) override {
    return refused();
  }
  grpc::Status Verify(grpc::ServerContext*, const v1::VerifyRequest*,
                      v1::VerifyResponse*) override {
    return refused();
  }
  grpc::Status Trace(grpc::ServerContext*, const v1::TraceRequest*, v1::TraceResponse*) override {
    return refused();
  }
  grpc::Status WatchEvents(grpc::ServerContext*, const v1::WatchEventsRequest*,
                           grpc::ServerWriter<v1::Event>*) override {
    return refused();
  }

 private:
  grpc::Status refused() const { return {grpc::StatusCode::PERMISSION_DENIED, why_}; }
  std::string why_;
};

// Result's error as a gRPC status: InvalidArgument → INVALID_ARGUMENT,
// NotFound → NOT_FOUND, Unavailable/Timeout → UNAVAILABLE, else INTERNAL.
grpc::Status to_status(const Error& e);

}  // namespace ambient::admin
