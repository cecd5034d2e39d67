#include "redirect/nftables/nft.h"

#include <fcntl.h>
#include <linux/netlink.h>
#include <malloc.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "lib/result.h"

#include "lib/unique_fd.h"

namespace ambient::redirect {

namespace {
// libnftables 1.0.x keeps process-global state (init flags, caches) without
// locks: every use in this process goes through this one mutex.
std::mutex& nft_mutex() {
  static std::mutex mu;
  return mu;
}
}  // namespace

// Frees contexts some time after their last use, and gives memory back to
// the kernel once nft work pauses.
//
// nft_ctx_free closes the netlink socket, and the kernel makes that close
// wait for nf_tables' pending destroy work (an RCU grace period, 10-30 ms)
// when the context just committed a deletion, e.g. a pod's tables at DEL.
// Waiting there, under the process-wide lock, would stall every other
// pod's nft work; a little later the work is done and the close is instant.
//
// Every run() mallocs a 2 MiB batch buffer. The agent keeps that on the
// heap (main.cpp: an mmap'd one costs a munmap and a TLB shootdown per
// transaction), and trims the heap here instead, when nothing has used
// libnftables for a while.
class Reaper {
 public:
  static constexpr std::chrono::milliseconds kDelay{100};
  static Reaper& get() {
    // Never destroyed: contexts may still be queued when the process exits.
    static Reaper* reaper = new Reaper();
    return *reaper;
  }
  void push(nft_ctx* c) {
    {
      std::lock_guard lk(mu_);
      queue_.emplace_back(std::chrono::steady_clock::now() + kDelay, c);
      note_locked();
    }
    cv_.notify_one();
  }
  // Some libnftables work just finished.
  void note_activity() {
    {
      std::lock_guard lk(mu_);
      note_locked();
    }
    cv_.notify_one();
  }

 private:
  void note_locked() {
    trim_due_ = std::chrono::steady_clock::now() + kDelay;
    if (!started_) {
      started_ = true;
      std::thread([this] { run(); }).detach();
    }
  }
  void run() {
    std::unique_lock lk(mu_);
    for (;;) {
      cv_.wait(lk, [&] { return !queue_.empty() || trim_due_; });
      const auto now = std::chrono::steady_clock::now();
      if (!queue_.empty() && queue_.front().first <= now) {
        nft_ctx* c = queue_.front().second;
        queue_.pop_front();
        lk.unlock();
        {
          std::lock_guard nft(nft_mutex());
          nft_ctx_free(c);
        }
        lk.lock();
        continue;
      }
      if (queue_.empty() && trim_due_ && *trim_due_ <= now) {
        // A burst is over: hand the batch buffers', parser's and caches'
        // memory back (glibc would keep it all).
        trim_due_.reset();
        lk.unlock();
        ::malloc_trim(0);
        lk.lock();
        continue;
      }
      auto wake = trim_due_.value_or(std::chrono::steady_clock::time_point::max());
      if (!queue_.empty()) wake = std::min(wake, queue_.front().first);
      cv_.wait_until(lk, wake);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, nft_ctx*>> queue_;
  std::optional<std::chrono::steady_clock::time_point> trim_due_;
  bool started_ = false;
};

void NftContext::Deleter::operator()(nft_ctx* c) const {
  if (deferred) {
    Reaper::get().push(c);
    return;
  }
  std::lock_guard lk(nft_mutex());
  nft_ctx_free(c);
}

Result<NftContext> NftContext::create() {
  // nft_ctx_new() calls exit() when it cannot open its netlink socket; find
  // out first, so that case is an error and not the end of the agent. Near
  // the fd limit one spare fd is not enough: the agent's other threads
  // (the plugin's log connection during an ADD) can take it before
  // libnftables does, so a few must be free.
  constexpr int kSpareFds = 8;
  std::vector<UniqueFd> probes;
  probes.emplace_back(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER));
  if (!probes.back().valid()) return sys_error("netlink socket (NETLINK_NETFILTER)");
  for (int i = 1; i < kSpareFds; ++i) {
    probes.emplace_back(::fcntl(probes.front().get(), F_DUPFD_CLOEXEC, 0));
    if (!probes.back().valid()) return sys_error("spare fds for libnftables");
  }
  probes.clear();
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

void NftContext::set_output_flag(unsigned flag, bool on) {
  std::lock_guard lk(nft_mutex());
  unsigned flags = nft_ctx_output_get_flags(ctx_.get());
  nft_ctx_output_set_flags(ctx_.get(), on ? flags | flag : flags & ~flag);
}

void NftContext::set_json(bool json) { set_output_flag(NFT_CTX_OUTPUT_JSON, json); }

void NftContext::set_stateless(bool stateless) {
  set_output_flag(NFT_CTX_OUTPUT_STATELESS, stateless);
}

Result<std::string> NftContext::run(const std::string& commands) {
  std::string out, err;
  int rc = 0;
  {
    std::lock_guard lk(nft_mutex());
    rc = nft_run_cmd_from_buffer(ctx_.get(), commands.c_str());
    out = nft_ctx_get_output_buffer(ctx_.get());
    err = nft_ctx_get_error_buffer(ctx_.get());
  }
  Reaper::get().note_activity();
  if (rc != 0) {
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return make_error(Errc::Internal, "nft: " + (err.empty() ? std::string("failed") : err));
  }
  return out;
}

}  // namespace ambient::redirect
