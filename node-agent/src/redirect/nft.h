// libnftables in process: one nft_ctx per use, created on the calling
// thread so its netlink socket lives in that thread's network namespace
// (create it inside run_in_netns for a pod). Each run() is one netlink
// batch: all of it applies, or none of it.
#pragma once

#include <memory>
#include <string>

#include "result.h"

struct nft_ctx;

namespace ambient::redirect {

class NftContext {
 public:
  static Result<NftContext> create(bool json_output = false);
  // Runs commands (one per line); the whole text is one transaction.
  // Returns nft's output (listings); errors carry nft's message.
  Result<std::string> run(const std::string& commands);

 private:
  struct Deleter {
    void operator()(nft_ctx* c) const;
  };
  explicit NftContext(nft_ctx* c) : ctx_(c) {}
  std::unique_ptr<nft_ctx, Deleter> ctx_;
};

}  // namespace ambient::redirect
