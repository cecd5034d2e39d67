#include "redirect/nft.h"

#include <nftables/libnftables.h>

namespace ambient::redirect {

void NftContext::Deleter::operator()(nft_ctx* c) const { nft_ctx_free(c); }

Result<NftContext> NftContext::create(bool json_output) {
  nft_ctx* c = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!c) return make_error(Errc::Internal, "nft_ctx_new failed");
  NftContext ctx(c);
  if (nft_ctx_buffer_output(c) != 0 || nft_ctx_buffer_error(c) != 0) {
    return make_error(Errc::Internal, "nft: cannot buffer output");
  }
  if (json_output) nft_ctx_output_set_flags(c, NFT_CTX_OUTPUT_JSON);
  return ctx;
}

Result<std::string> NftContext::run(const std::string& commands) {
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
