#include "redirect/nft.h"

#include <linux/netlink.h>
#include <malloc.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

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

// Frees contexts some time after their last use. nft_ctx_free closes the
// netlink socket, and the kernel makes that close wait for nf_tables'
// pending destroy work (an RCU grace period, 10-30 ms) when the context
// just committed a deletion, e.g. a pod's tables at DEL. Waiting there,
// under the process-wide lock, would stall every other pod's nft work; a
// little later the work is done and the close is instant.
class Reaper {
 public:
  static constexpr std::chrono::milliseconds kDelay{100};
  void push(nft_ctx* c) {
    {
      std::lock_guard lk(mu_);
      queue_.push_back({std::chrono::steady_clock::now() + kDelay, c});
      if (!started_) {
        started_ = true;
        std::thread([this] { run(); }).detach();
      }
    }
    cv_.notify_one();
  }

 private:
  void run() {
    std::unique_lock lk(mu_);
    for (;;) {
      cv_.wait(lk, [&] { return !queue_.empty(); });
      auto [due, c] = queue_.front();
      if (std::chrono::steady_clock::now() < due) {
        cv_.wait_until(lk, due);
        continue;
      }
      queue_.pop_front();
      lk.unlock();
      {
        std::lock_guard nft(nft_mutex());
        nft_ctx_free(c);
      }
      lk.lock();
      if (queue_.empty()) {
        // A burst is over: hand the parser's and caches' memory back (a
        // context allocates a few hundred KiB that glibc would keep).
        lk.unlock();
        ::malloc_trim(0);
        lk.lock();
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, nft_ctx*>> queue_;
  bool started_ = false;
};

void NftContext::Deleter::operator()(nft_ctx* c) const {
  if (!deferred) {
    std::lock_guard lk(nft_mutex());
    nft_ctx_free(c);
    return;
  }
  // Never destroyed: contexts may still be queued when the process exits.
  static Reaper* reaper = new Reaper();
  reaper->push(c);
}

Result<NftContext> NftContext::create() {
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
    }
  }
  if (!c) return make_error(Errc::Internal, "nft_ctx_new failed");
  NftContext ctx(c);  // frees under the lock, so only outside it
  if (!buffered) return make_error(Errc::Internal, "nft: cannot buffer output");
  return ctx;
}

void NftContext::close_later() { ctx_.get_deleter().deferred = true; }

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
