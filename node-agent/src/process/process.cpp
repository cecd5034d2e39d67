#include "process/process.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "lib/unique_fd.h"

extern char** environ;

#if defined(__SANITIZE_THREAD__)
#define AMBIENT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define AMBIENT_TSAN 1
#endif
#endif
#ifndef AMBIENT_TSAN
#define AMBIENT_TSAN 0
#endif

namespace ambient {

namespace {

// Owns a forked child: kills and reaps it unless it was waited for.
class ChildProcess {
 public:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int st = 0;
      while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
      }
    }
  }
  Result<int> wait() {
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0) {
      if (errno != EINTR) return sys_error("waitpid");
    }
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  void kill() { ::kill(pid_, SIGKILL); }

 private:
  pid_t pid_;
};

// Runs in the forked child: only async-signal-safe calls from here on.
void child_write(const char* msg) {
  ssize_t n = ::write(STDERR_FILENO, msg, std::strlen(msg));
  (void)n;
}

// True when the caller is now in a mount namespace of its own.
bool child_sandbox() {
  if (::unshare(CLONE_NEWNS) != 0) {
    child_write("ambient sandbox: unshare(CLONE_NEWNS) failed, running unsandboxed\n");
    return false;
  }
  if (::mount("", "/", nullptr, MS_PRIVATE | MS_REC, nullptr) != 0 &&
      ::mount("", "/", nullptr, MS_SLAVE | MS_REC, nullptr) != 0) {
    child_write("ambient sandbox: cannot make / private, running unsandboxed\n");
    return false;
  }
  if (::mount("/dev/null", "/etc/nsswitch.conf", nullptr, MS_BIND, nullptr) == 0) {
    ::mount("", "/etc/nsswitch.conf", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr);
  }
  if (::mount("ambient-xtables", "/run", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=64k,mode=0755") != 0) {
    child_write("ambient sandbox: cannot mount a private /run for the xtables lock\n");
  }
  return true;
}

// A sandbox mount namespace, made once per calling thread by a short-lived
// child and kept by an fd: each sandboxed command's child then only
// setns()es into it. Making (and at exit tearing down) a mount namespace
// for every command was ~30 % of the agent's CPU when it re-verified 110
// pods' iptables rules at restart. One per thread (in practice, per netns
// worker), so commands running at the same time never share an xtables
// lock. Invalid when it cannot be made: children then sandbox themselves.
UniqueFd make_sandbox_namespace() {
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return UniqueFd();
  UniqueFd ready_r(ready[0]), ready_w(ready[1]);
  pid_t pid = ::fork();
  if (pid < 0) return UniqueFd();
  if (pid == 0) {
    // Waits to be killed once the parent holds the namespace (or with the
    // thread that forked it). Nothing is read here, so a helper another
    // thread forks meanwhile, holding copies of our fds, cannot stall us.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    char ok = child_sandbox() ? 1 : 0;
    ssize_t n = ::write(ready_w.get(), &ok, 1);
    (void)n;
    for (;;) ::pause();
  }
  ChildProcess child(pid);  // killed and reaped when this returns
  ready_w.reset();
  char ok = 0;
  UniqueFd ns;
  if (::read(ready_r.get(), &ok, 1) == 1 && ok == 1) {
    const std::string path = "/proc/" + std::to_string(pid) + "/ns/mnt";
    ns.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  }
  return ns;
}

// What the spawned child needs, all prepared before it exists.
struct SpawnArgs {
  int in, out, err;
  bool sandbox;
  int sandbox_ns;  // < 0: none, the child sandboxes itself
  char** argv;
  char** envp;
  const sigset_t* mask;  // the spawning thread's
};

// The child, on its own stack but in the parent's memory (CLONE_VM) until
// it execs: system calls only, nothing that allocates or takes a lock.
int spawned_child(void* p) {
  const auto* a = static_cast<const SpawnArgs*>(p);
  ::dup2(a->in, STDIN_FILENO);
  ::dup2(a->out, STDOUT_FILENO);
  ::dup2(a->err, STDERR_FILENO);
  if (a->sandbox && (a->sandbox_ns < 0 || ::setns(a->sandbox_ns, CLONE_NEWNS) != 0)) {
    (void)child_sandbox();
  }
  ::sigprocmask(SIG_SETMASK, a->mask, nullptr);
  ::execvpe(a->argv[0], a->argv, a->envp);
  child_write("exec failed: ");
  child_write(a->argv[0]);
  child_write("\n");
  ::_exit(127);
}

// Like posix_spawn (which cannot enter a namespace): the child shares our
// memory until its exec (CLONE_VM | CLONE_VFORK), so no page tables are
// copied and torn down again. With fork that was most of the agent's CPU
// per command. Every signal stays blocked while the child runs in our
// memory, so no handler of ours ever runs on its stack.
pid_t spawn(SpawnArgs args) {
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  args.mask = &old;
#if AMBIENT_TSAN
  // ThreadSanitizer runs its forked-child bookkeeping inside a clone that
  // shares our memory, so this very process then counts as a child of a
  // multi-threaded fork: it refuses new threads and loses what it knew of
  // the others. Its build copies the memory instead; the child is the same.
  pid_t pid = ::fork();
  if (pid == 0) spawned_child(&args);  // execs or exits
#else
  constexpr size_t kStack = size_t{64} * 1024;  // execvpe's PATH search needs a few KiB
  auto stack = std::make_unique<char[]>(kStack);
  pid_t pid = ::clone(spawned_child, stack.get() + kStack, CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
#endif
  const int err = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = err;
  return pid;
}

int sandbox_namespace() {
  thread_local UniqueFd ns = make_sandbox_namespace();
  return ns.get();
}

std::atomic<uint64_t> g_commands_started{0};

}  // namespace

uint64_t commands_started() { return g_commands_started.load(std::memory_order_relaxed); }

namespace {

// The agent's environment with the spec's overrides, and in the sandbox the
// xtables lock moved onto its private /run.
std::vector<std::string> child_environment(const CommandSpec& spec) {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string kv(*e);
    bool overridden = false;
    for (const auto& o : spec.env) {
      auto eq = o.find('=');
      if (kv.compare(0, eq + 1, o, 0, eq + 1) == 0) overridden = true;
    }
    if (!overridden) env.push_back(std::move(kv));
  }
  for (const auto& o : spec.env) env.push_back(o);
  if (spec.sandbox) {
    // iptables >= 1.8.6 reads the lock path from here; older ones use this
    // path anyway. Either way it is the private tmpfs the sandbox mounts.
    std::erase_if(env, [](const std::string& kv) { return kv.rfind("XTABLES_LOCKFILE=", 0) == 0; });
    env.emplace_back("XTABLES_LOCKFILE=/run/xtables.lock");
  }
  return env;
}

struct ChildPipes {
  UniqueFd in_w, out_r, err_r;
};

// Feeds the child's stdin and collects its stdout and stderr until both
// close; kills the child at the deadline.
Result<> exchange_with_child(const CommandSpec& spec, ChildPipes& p, ChildProcess& child,
                             CommandResult& res) {
  size_t written = 0;
  if (spec.stdin_data.empty()) p.in_w.reset();
  ::fcntl(p.in_w.get(), F_SETFL, O_NONBLOCK);
  const auto deadline = std::chrono::steady_clock::now() + spec.timeout;
  while (p.out_r.valid() || p.err_r.valid()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      child.kill();
      return make_error(Errc::Timeout, spec.argv[0] + " did not finish within " +
                                           std::to_string(spec.timeout.count()) + " ms");
    }
    pollfd fds[3];
    int n = 0;
    if (p.in_w.valid()) fds[n++] = {p.in_w.get(), POLLOUT, 0};
    if (p.out_r.valid()) fds[n++] = {p.out_r.get(), POLLIN, 0};
    if (p.err_r.valid()) fds[n++] = {p.err_r.get(), POLLIN, 0};
    int rc = ::poll(fds, n, static_cast<int>(left.count()));
    if (rc < 0 && errno != EINTR) return sys_error("poll");
    for (int i = 0; i < n; ++i) {
      if (!fds[i].revents) continue;
      if (fds[i].fd == p.in_w.get()) {
        ssize_t w = ::write(p.in_w.get(), spec.stdin_data.data() + written,
                            spec.stdin_data.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN) p.in_w.reset();  // child closed stdin early
        if (written == spec.stdin_data.size()) p.in_w.reset();
        continue;
      }
      char buf[4096];
      ssize_t r = ::read(fds[i].fd, buf, sizeof buf);
      std::string& dst = fds[i].fd == p.out_r.get() ? res.out : res.err;
      if (r > 0) {
        dst.append(buf, static_cast<size_t>(r));
      } else if (r == 0 || errno != EAGAIN) {
        (fds[i].fd == p.out_r.get() ? p.out_r : p.err_r).reset();
      }
    }
  }
  p.in_w.reset();
  return {};
}

}  // namespace

Result<CommandResult> run_command(const CommandSpec& spec) {
  if (spec.argv.empty()) return make_error(Errc::InvalidArgument, "empty command");
  // Everything the child needs is built before fork: it may only make
  // async-signal-safe calls afterwards.
  std::vector<char*> argv;
  argv.reserve(spec.argv.size() + 1);
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_store = child_environment(spec);
  std::vector<char*> envp;
  envp.reserve(env_store.size() + 1);
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);

  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0) return sys_error("pipe");
  UniqueFd in_r(in_pipe[0]), in_w(in_pipe[1]);
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return sys_error("pipe");
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return sys_error("pipe");
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);

  pid_t pid = spawn({.in = in_r.get(),
                     .out = out_w.get(),
                     .err = err_w.get(),
                     .sandbox = spec.sandbox,
                     .sandbox_ns = spec.sandbox ? sandbox_namespace() : -1,
                     .argv = argv.data(),
                     .envp = envp.data(),
                     .mask = nullptr});
  if (pid < 0) return sys_error("spawn " + spec.argv[0]);
  g_commands_started.fetch_add(1, std::memory_order_relaxed);
  ChildProcess child(pid);
  in_r.reset();
  out_w.reset();
  err_w.reset();

  CommandResult res;
  ChildPipes pipes{std::move(in_w), std::move(out_r), std::move(err_r)};
  AMBIENT_RETURN_IF_ERROR(exchange_with_child(spec, pipes, child, res));
  AMBIENT_ASSIGN_OR_RETURN(res.exit_code, child.wait());
  return res;
}

Result<CommandResult> run_checked(const CommandSpec& spec) {
  AMBIENT_ASSIGN_OR_RETURN(CommandResult r, run_command(spec));
  if (r.exit_code != 0) {
    std::string text = r.err.empty() ? r.out : r.err;
    while (!text.empty() && text.back() == '\n') text.pop_back();
    return make_error(Errc::Internal,
                      spec.argv[0] + " exited with " + std::to_string(r.exit_code) + ": " + text);
  }
  return r;
}

}  // namespace ambient
