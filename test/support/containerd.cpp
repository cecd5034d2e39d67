#include "support/containerd.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>

#include "process/process.h"
#include "support/random.h"

#ifndef AMBIENT_TEST_IMAGES_DIR
#error "AMBIENT_TEST_IMAGES_DIR: test/tools/images (build-images.sh), set by cri_client's target"
#endif

namespace ambient::test {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr const char* kRunContainerd = "/run/containerd";
constexpr const char* kCniResults = "/var/lib/cni/results";

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string tail(const std::string& text, size_t n) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

bool on_path(const std::string& prog) {
  const char* path = ::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    if (::access((d + "/" + prog).c_str(), X_OK) == 0) return true;
  }
  return false;
}

// The images, built once per test process into a directory removed at exit.
struct ImageCache {
  std::string dir, error;
  ImageCache() {
    std::string tmpl = (fs::temp_directory_path() / "amb-cri-images-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      error = "mkdtemp for the test images failed";
      return;
    }
    dir = tmpl;
    auto r = run_checked(
        {.argv = {"bash", std::string(AMBIENT_TEST_IMAGES_DIR) + "/build-images.sh", dir},
         .timeout = 120s});
    if (!r) error = "building the test images: " + r.error().describe();
  }
  ~ImageCache() {
    std::error_code ec;
    if (!dir.empty()) fs::remove_all(dir, ec);
  }
};

const ImageCache& image_cache() {
  static ImageCache cache;
  return cache;
}

// Every network name in the conflists of `conf_dir`.
std::vector<std::string> network_names(const std::string& conf_dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(conf_dir, ec)) {
    auto j = nlohmann::json::parse(slurp(e.path().string()), nullptr, false);
    if (j.is_object() && j.contains("name") && j["name"].is_string()) names.push_back(j["name"]);
  }
  return names;
}

// Mount points at or under `dir` (mountinfo's field 5, octal escapes
// decoded), innermost last as mountinfo lists them.
std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> out;
  std::ifstream f("/proc/self/mountinfo");
  for (std::string line; std::getline(f, line);) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, point;
    fields >> id >> parent >> devno >> root >> point;
    std::string decoded;
    for (size_t i = 0; i < point.size(); ++i) {
      if (point[i] == '\\' && i + 3 < point.size()) {
        decoded += static_cast<char>(std::stoi(point.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        decoded += point[i];
      }
    }
    if (decoded == dir || decoded.rfind(dir + "/", 0) == 0) out.push_back(decoded);
  }
  return out;
}

// The cgroup hierarchies mounted on this host (v1 controllers, the v2 or
// hybrid "unified" root), each once.
std::vector<std::string> cgroup_roots() {
  std::vector<std::string> roots;
  std::error_code ec;
  if (fs::exists("/sys/fs/cgroup/cgroup.procs")) roots.emplace_back("/sys/fs/cgroup");
  for (const auto& e : fs::directory_iterator("/sys/fs/cgroup", ec)) {
    if (e.is_directory() && !e.is_symlink() && fs::exists(e.path() / "cgroup.procs")) {
      roots.push_back(e.path().string());
    }
  }
  return roots;
}

// Directories under `top`, deepest first (the order cgroupfs lets rmdir go).
std::vector<std::string> dirs_deepest_first(const std::string& top) {
  std::vector<std::string> dirs;
  std::error_code ec;
  if (!fs::is_directory(top, ec)) return dirs;
  dirs.push_back(top);
  for (auto it = fs::recursive_directory_iterator(top, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) dirs.push_back(it->path().string());
  }
  std::sort(dirs.begin(), dirs.end(), [](const std::string& a, const std::string& b) {
    return std::count(a.begin(), a.end(), '/') > std::count(b.begin(), b.end(), '/');
  });
  return dirs;
}

// Exited counts as gone: killed shims are reparented to init, which may
// reap them late.
bool pid_gone(pid_t pid) {
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  return paren == std::string::npos || stat.compare(paren + 1, 3, " Z ") == 0;
}

// Processes whose command line holds `needle` as one argument.
std::vector<pid_t> pids_with_arg(const std::string& needle) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = slurp(e.path().string() + "/cmdline");
    std::stringstream args(cmdline);
    for (std::string a; std::getline(args, a, '\0');) {
      if (a == needle) {
        out.push_back(std::stoi(name));
        break;
      }
    }
  }
  return out;
}

}  // namespace

std::string Containerd::missing_prerequisite() {
  if (::geteuid() != 0) return "containerd needs root";
  for (const char* prog : {"containerd", "containerd-shim-runc-v2", "runc", "ctr", "gcc"}) {
    if (!on_path(prog)) return std::string(prog) + " is not installed (scripts/install-deps)";
  }
  if (::access("/bin/busybox", X_OK) != 0) return "busybox-static is not installed";
  if (slurp("/proc/filesystems").find("\toverlay\n") == std::string::npos) {
    return "the kernel has no overlayfs (containerd's snapshotter)";
  }
  return {};
}

Containerd::Containerd(ContainerdOptions opts) : opts_(std::move(opts)), id_(random_hex(8)) {
  dir_ = opts_.work_root + "/amb-cri-" + id_;
  reason_ = missing_prerequisite();
  if (!reason_.empty()) return;
  auto r = prepare();
  if (r) r = start();
  if (r) r = import_images();
  if (!r) reason_ = r.error().describe() + "\ncontainerd log: " + tail(log(), 2000);
}

Containerd::~Containerd() {
  // Teardown is best effort: one step failing (a gRPC or filesystem error
  // thrown) must not skip the rest or terminate the test run.
  auto step = [](const auto& fn) {
    try {
      fn();
    } catch (...) {  // NOLINT(bugprone-empty-catch): nothing more can be done here
    }
  };
  if (pid_ > 0) step([&] { remove_pods(); });
  step([&] { stop(); });
  step([&] { kill_leftovers(); });
  step([&] { unmount_all(); });
  step([&] { remove_cgroups(); });
  step([&] { remove_cni_cache(); });
  std::error_code ec;
  fs::remove_all(dir_, ec);
  if (made_run_containerd_) {
    // Only when empty: shims of another containerd may have sockets there.
    ::rmdir((std::string(kRunContainerd) + "/s").c_str());
    ::rmdir(kRunContainerd);
  }
}

std::string Containerd::log() const { return slurp(log_path()); }

std::string Containerd::cgroup_parent(const std::string& uid) const {
  return "/amb-cri-" + id_ + "/kubepods/besteffort/pod" + uid;
}

std::string Containerd::log_directory(const std::string& ns, const std::string& name,
                                      const std::string& uid) const {
  return dir_ + "/pods/" + ns + "_" + name + "_" + uid;
}

Result<> Containerd::prepare() {
  made_run_containerd_ = !fs::exists(kRunContainerd);
  std::error_code ec;
  fs::create_directories(dir_ + "/pods", ec);
  if (ec) return make_error(Errc::Internal, "mkdir " + dir_ + ": " + ec.message());
  if (opts_.cni_conf_dir.empty() || opts_.cni_bin_dir.empty()) {
    return make_error(Errc::InvalidArgument, "cni_conf_dir and cni_bin_dir are required");
  }
  if (::access((opts_.cni_bin_dir + "/loopback").c_str(), X_OK) != 0) {
    return make_error(Errc::InvalidArgument,
                      "no loopback plugin in " + opts_.cni_bin_dir + " (containerd needs it)");
  }
  network_names_ = network_names(opts_.cni_conf_dir);
  if (network_names_.empty()) {
    return make_error(Errc::InvalidArgument, "no CNI network config in " + opts_.cni_conf_dir);
  }
  std::ofstream f(dir_ + "/config.toml");
  f << config_toml();
  f.flush();
  if (!f) return make_error(Errc::Internal, "writing " + dir_ + "/config.toml");
  cri_ = std::make_unique<cri::CriClient>(socket());
  return {};
}

std::string Containerd::config_toml() const {
  std::string t = R"(version = 2
root = "@DIR@/root"
state = "@DIR@/state"
# Snapshotters that would probe the host's disks, and tracing.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "@SOCK@"
[ttrpc]
  address = "@SOCK@.ttrpc"
[debug]
  level = "@LEVEL@"
[plugins."io.containerd.internal.v1.opt"]
  path = "@DIR@/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "@PAUSE@"
  # The VM's capability bounding set lacks CAP_SYS_RESOURCE: without this,
  # runc fails to set oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = @NETNS_UNDER_STATE@
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  # runc's state in the run dir, not /run/containerd/runc.
  Root = "@DIR@/runc"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "@CNI_BIN@"
  conf_dir = "@CNI_CONF@"
)";
  const std::pair<const char*, std::string> values[] = {
      {"@DIR@", dir_},
      {"@SOCK@", socket()},
      {"@LEVEL@", opts_.log_level},
      {"@PAUSE@", kPauseImage},
      {"@NETNS_UNDER_STATE@", opts_.netns_under_state_dir ? "true" : "false"},
      {"@CNI_BIN@", opts_.cni_bin_dir},
      {"@CNI_CONF@", opts_.cni_conf_dir}};
  for (const auto& [token, value] : values) {
    for (size_t at = t.find(token); at != std::string::npos; at = t.find(token, at)) {
      t.replace(at, std::strlen(token), value);
      at += value.size();
    }
  }
  return t;
}

Result<> Containerd::start() {
  AMBIENT_RETURN_IF_ERROR(spawn());
  return wait_ready();
}

Result<> Containerd::spawn() {
  std::vector<std::string> argv = {"containerd", "--config", dir_ + "/config.toml"};
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  int netns = -1;
  if (!opts_.netns.empty()) {
    const std::string path = "/var/run/netns/" + opts_.netns;
    netns = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (netns < 0) return sys_error("open " + path);
  }
  int log = ::open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) {
    if (netns >= 0) ::close(netns);
    return sys_error("open " + log_path());
  }
  pid_ = ::fork();
  if (pid_ == 0) {
    // Only async-signal-safe calls: the test process has threads (gRPC).
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);
    if (netns >= 0 && ::setns(netns, CLONE_NEWNET) != 0) ::_exit(126);
    ::dup2(log, STDOUT_FILENO);
    ::dup2(log, STDERR_FILENO);
    ::setpgid(0, 0);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(log);
  if (netns >= 0) ::close(netns);
  if (pid_ < 0) return sys_error("fork containerd", fork_errno);
  return {};
}

Result<> Containerd::wait_ready() {
  const auto deadline = std::chrono::steady_clock::now() + opts_.start_timeout;
  std::string last = "no answer";
  while (std::chrono::steady_clock::now() < deadline) {
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      return make_error(Errc::Unavailable, "containerd exited (status " + std::to_string(st) +
                                               ") before CRI answered");
    }
    // A fresh client per attempt: containerd binds its socket before it
    // listens, and a connection refused in between leaves a client in
    // gRPC's reconnect backoff.
    if (fs::exists(socket())) {
      auto v = cri::CriClient(socket()).version(250ms);
      if (v) {
        cri_->reconnect();
        return {};
      }
      last = v.error().describe();
    }
    std::this_thread::sleep_for(20ms);
  }
  return make_error(
      Errc::Timeout,
      "CRI did not answer within " + std::to_string(opts_.start_timeout.count()) + " ms: " + last);
}

Result<> Containerd::import_images() {
  const ImageCache& cache = image_cache();
  if (!cache.error.empty()) return make_error(Errc::Internal, cache.error);
  for (const char* name : {"pause.tar", "busybox.tar"}) {
    AMBIENT_RETURN_IF_ERROR(
        run_checked({.argv = {"ctr", "--address", socket(), "--namespace", "k8s.io", "images",
                              "import", cache.dir + "/" + name},
                     .timeout = 60s})
            .context("importing " + std::string(name)));
  }
  // CRI learns of imported images from containerd's events, asynchronously;
  // a sandbox image it does not know yet would be pulled from a registry.
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (true) {
    AMBIENT_ASSIGN_OR_RETURN(auto images, cri_->list_images());
    int found = 0;
    for (const auto& img : images) {
      for (const auto& tag : img.repo_tags()) found += tag == kPauseImage || tag == kBusyboxImage;
    }
    if (found == 2) return {};
    if (std::chrono::steady_clock::now() > deadline) {
      return make_error(Errc::Timeout, "CRI does not list the imported images");
    }
    std::this_thread::sleep_for(20ms);
  }
}

Result<> Containerd::restart() {
  stop();
  return start();
}

void Containerd::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int st = 0;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (::waitpid(pid_, &st, WNOHANG) != pid_) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &st, 0);
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  pid_ = -1;
}

void Containerd::remove_pods() {
  // A short deadline: a wedged runtime must not hang the test's teardown.
  cri::CriClient c(socket(), 20s);
  auto pods = c.list_pod_sandbox();
  if (!pods) return;
  for (const auto& p : *pods) {
    (void)c.stop_pod_sandbox(p.id());
    (void)c.remove_pod_sandbox(p.id());
  }
}

void Containerd::kill_leftovers() {
  // Containers runc still knows (containerd died before removing them).
  const std::string runc_root = dir_ + "/runc/k8s.io";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(runc_root, ec)) {
    (void)run_command(
        {.argv = {"runc", "--root", runc_root, "delete", "--force", e.path().filename().string()},
         .timeout = 10s});
  }
  // Shims outlive containerd by design; ours name our socket. Each listens
  // on /run/containerd/s/<hash> whatever the config says, and only removes
  // it when told to shut down: the bundle's "address" file names it.
  std::vector<std::string> shim_sockets;
  for (const auto& e :
       fs::directory_iterator(dir_ + "/state/io.containerd.runtime.v2.task/k8s.io", ec)) {
    std::string address = slurp(e.path().string() + "/address");
    if (address.rfind("unix://", 0) == 0) shim_sockets.push_back(address.substr(7));
  }
  std::vector<pid_t> shims = pids_with_arg(socket());
  for (pid_t p : shims) ::kill(p, SIGKILL);
  // Whatever still runs in the run's pod cgroups.
  for (const auto& root : cgroup_roots()) {
    for (const auto& d : dirs_deepest_first(root + "/amb-cri-" + id_)) {
      std::ifstream procs(d + "/cgroup.procs");
      for (pid_t p; procs >> p;) {
        ::kill(p, SIGKILL);
        shims.push_back(p);
      }
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  for (pid_t p : shims) {
    while (!pid_gone(p) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
  }
  for (const auto& s : shim_sockets) {
    if (s.rfind(std::string(kRunContainerd) + "/s/", 0) == 0) ::unlink(s.c_str());
  }
}

void Containerd::unmount_all() {
  // Detached innermost first; stacked mounts need more than one pass.
  for (int pass = 0; pass < 4; ++pass) {
    auto points = mounts_under(dir_);
    if (points.empty()) return;
    for (auto it = points.rbegin(); it != points.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
  }
}

void Containerd::remove_cgroups() {
  for (const auto& root : cgroup_roots()) {
    // rmdir only: cgroupfs directories cannot be emptied with unlink.
    for (const auto& d : dirs_deepest_first(root + "/amb-cri-" + id_)) ::rmdir(d.c_str());
  }
}

void Containerd::remove_cni_cache() {
  // libcni names a result <network>-<container id>-<ifname>; containerd's
  // loopback network is "cni-loopback" for every runtime on the host, so
  // those go by the IDs of the sandboxes this containerd still had.
  std::vector<std::string> ids;
  std::error_code ec;
  for (const auto& e :
       fs::directory_iterator(dir_ + "/root/io.containerd.grpc.v1.cri/sandboxes", ec)) {
    ids.push_back(e.path().filename().string());
  }
  for (const auto& e : fs::directory_iterator(kCniResults, ec)) {
    const std::string file = e.path().filename().string();
    bool ours = false;
    for (const auto& net : network_names_) ours = ours || file.rfind(net + "-", 0) == 0;
    for (const auto& id : ids) ours = ours || file.find("-" + id + "-") != std::string::npos;
    if (ours) fs::remove(e.path(), ec);
  }
}

}  // namespace ambient::test
