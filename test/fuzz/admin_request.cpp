// Admin API requests as the service gets them once gRPC has decoded the
// protobuf: the first byte picks the call, the rest is its request message.
// A scripted source with three pods stands in for the agent
// (test/unit/admin/fake_source.h), so what is fuzzed is the service's own
// checks, lookups and answers.
#include <cstddef>
#include <cstdint>
#include <string>

#include "admin/service.h"
#include "unit/admin/fake_source.h"

namespace v1 = ambient::admin::v1;

namespace {

template <class Req, class Resp, class Call>
void call(const std::string& body, Call&& fn) {
  Req req;
  if (!req.ParseFromString(body)) return;
  Resp out;
  (void)fn(&req, &out);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  ambient::test::FakeSource src;
  ambient::test::populate(src);
  ambient::admin::AdminService svc(src);
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 5) {
    case 0:
      call<v1::GetStatusRequest, v1::Status>(
          body, [&](auto* q, auto* r) { return svc.GetStatus(nullptr, q, r); });
      break;
    case 1:
      call<v1::ListPodsRequest, v1::ListPodsResponse>(
          body, [&](auto* q, auto* r) { return svc.ListPods(nullptr, q, r); });
      break;
    case 2:
      call<v1::GetPodRequest, v1::Pod>(body,
                                       [&](auto* q, auto* r) { return svc.GetPod(nullptr, q, r); });
      break;
    case 3:
      call<v1::VerifyRequest, v1::VerifyResponse>(
          body, [&](auto* q, auto* r) { return svc.Verify(nullptr, q, r); });
      break;
    default:
      call<v1::TraceRequest, v1::TraceResponse>(
          body, [&](auto* q, auto* r) { return svc.Trace(nullptr, q, r); });
      break;
  }
  return 0;
}
