// libnftables in process: an nft_ctx is created on the calling thread, so
// its netlink socket lives in that thread's network namespace (create it
// inside run_in_netns for a pod). Each run() is one netlink batch: all of
// it applies, or none of it.
//
// Closing a context's socket is not free: the kernel's NETLINK_URELEASE
// handler waits for nf_tables' pending destroy work, i.e. an RCU grace
// period after the last commit in that netns (10-30 ms here). Contexts
// used for every pod in one netns (the host's) are therefore kept open.
#pragma once

#include <memory>
#include <string>

#include "lib/result.h"

struct nft_ctx;

namespace ambient::redirect {

class NftContext {
 public:
  static Result<NftContext> create();
  // Runs commands (one per line); the whole text is one transaction.
  // Returns nft's output (listings); errors carry nft's message.
  Result<std::string> run(const std::string& commands);
  // Listings as JSON (`nft -j`) or as nft syntax.
  void set_json(bool json);
  // Listings without counter values (`nft -s`): equal rules list equal.
  void set_stateless(bool stateless);
  // For a context that committed deletions: its socket's close would wait
  // for the kernel's destroy work, so a background thread closes it a
  // little later, off the caller's path and outside the process-wide lock.
  void close_later();

 private:
  struct Deleter {
    bool deferred = false;  // close_later()
    void operator()(nft_ctx* c) const;
  };
  explicit NftContext(nft_ctx* c) : ctx_(c, Deleter{}) {}
  void set_output_flag(unsigned flag, bool on);
  std::unique_ptr<nft_ctx, Deleter> ctx_;
};

}  // namespace ambient::redirect
