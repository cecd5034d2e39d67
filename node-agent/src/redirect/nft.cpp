#include "redirect/nft.h"

#include <linux/netlink.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>

#include <mutex>

#include "unique_fd.h"

namespace ambient::redirect {

namespace {
// libnftables 1.0.x keeps process-global state (init flags, caches) without
// locks: every use in this process goes through this one mutex.
std::mutex& nft_mutex() {
  static std::mutex mu;
  return mu;
}
}  // namespace

void NftContext::Deleter::operator()(nft_ctx* c) const {
  std::lock_guard lk(nft_mutex());
  nft_ctx_free(c);
}

Result<NftContext> NftContext::create(bool json_output) {
  // nft_ctx_new() calls exit() when it cannot open its netlink socket; find
  // out first, so that case is an error and not the end of the agent.
  UniqueFd probe(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER));
  if (!probe.valid()) return sys_error("netlink socket (NETLINK_NETFILTER)");
  nft_ctx* c = nullptr;
  bool buffered = false;
  {
    std::lock_guard lk(nft_mutex());
    c = nft_ctx_new(NFT_CTX_DEFAULT);
    if (c) {
      buffered = nft_ctx_buffer_output(c) == 0 && nft_ctx_buffer_error(c) == 0;
      if (json_output) nft_ctx_output_set_flags(c, NFT_CTX_OUTPUT_JSON);
    }
  }
  if (!c) return make_error(Errc::Internal, "nft_ctx_new failed");
  NftContext ctx(c);  // frees under the lock, so only outside it
  if (!buffered) return make_error(Errc::Internal, "nft: cannot buffer output");
  return ctx;
}

void NftContext::set_json(bool json) {
  std::lock_guard lk(nft_mutex());
  unsigned flags = nft_ctx_output_get_flags(ctx_.get());
  nft_ctx_output_set_flags(ctx_.get(),
                           json ? flags | NFT_CTX_OUTPUT_JSON : flags & ~NFT_CTX_OUTPUT_JSON);
}

Result<std::string> NftContext::run(const std::string& commands) {
  std::lock_guard lk(nft_mutex());
  int rc = nft_run_cmd_from_buffer(ctx_.get(), commands.c_str());
  std::string out = nft_ctx_get_output_buffer(ctx_.get());
  std::string err = nft_ctx_get_error_buffer(ctx_.get());
  if (rc != 0) {
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return make_error(Errc::Internal, "nft: " + (err.empty() ? std::string("failed") : err));
  }
  return out;
}

}  // namespace ambient::redirect
