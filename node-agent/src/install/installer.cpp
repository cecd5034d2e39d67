#include "install/installer.h"

#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "lib/cni_event.h"
#include "lib/ip_address.h"
#include "lib/unique_fd.h"
#include "log/log.h"

namespace ambient::install {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A regular file at `path` itself: a symlink there, even to a file with
// the right content, is someone else's and gets replaced by our file.
bool is_own_file(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The file CNI_CONF_NAME names, else its .conf/.conflist sibling
// (docs/installer.md#primary-config): the primary CNI may have written either.
Result<std::string> named_config_path(const std::string& dir, const std::string& name) {
  std::string p = dir + "/" + name;
  if (fs::exists(p)) return p;
  for (auto [from, to] : {std::pair{".conflist", ".conf"}, std::pair{".conf", ".conflist"}}) {
    if (ends_with(p, from)) {
      std::string sibling = p.substr(0, p.size() - std::string_view(from).size()) + to;
      if (fs::exists(sibling)) return sibling;
    }
  }
  return make_error(Errc::NotFound, "CNI config " + p + " does not exist yet");
}

}  // namespace

std::string standalone_conf(const Json& entry) {
  // Upstream marshals the struct, so the keys come in declaration order,
  // escaped as Go escapes them.
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const char* key :
       {"cniVersion", "name", "type", "ipam", "dns", "plugin_log_level", "cni_agent_run_dir",
        "ambient_enabled", "enablement_selectors", "exclude_namespaces", "pod_namespace",
        "native_nftables", "enable_ambient_detection_retry"}) {
    if (entry.contains(key)) out[key] = nlohmann::ordered_json::parse(entry[key].dump());
  }
  return go_escapes(out.dump(2)) + "\n";
}

Json plugin_entry(bool ambient_enabled, const std::string& run_dir,
                  const Json& enablement_selectors, const std::vector<std::string>& exclude,
                  const std::string& pod_namespace, bool native_nftables, bool detection_retry,
                  const std::string& log_level) {
  Json e = Json::object();
  e["cniVersion"] = "0.3.1";
  e["name"] = "istio-cni";
  e["type"] = "istio-cni";
  e["ipam"] = Json::object();
  e["dns"] = Json::object();
  e["plugin_log_level"] = log_level;
  e["cni_agent_run_dir"] = run_dir;
  e["ambient_enabled"] = ambient_enabled;
  e["enablement_selectors"] = enablement_selectors.is_null() ? Json::array() : enablement_selectors;
  e["exclude_namespaces"] = exclude.empty() ? Json(nullptr) : Json(exclude);  // upstream: null
  e["pod_namespace"] = pod_namespace;
  e["native_nftables"] = native_nftables;
  e["enable_ambient_detection_retry"] = detection_retry;
  return e;
}

std::string kubeconfig_yaml(const std::string& server, const std::string& ca_pem,
                            const std::string& token, bool skip_tls_verify) {
  std::string y = "apiVersion: v1\nclusters:\n- cluster:\n";
  if (skip_tls_verify) {
    y += "    insecure-skip-tls-verify: true\n";
  } else {
    y += "    certificate-authority-data: " + base64_encode(ca_pem) + "\n";
  }
  y += "    server: " + server + "\n";
  y += "  name: local\ncontexts:\n- context:\n    cluster: local\n    user: istio-cni\n"
       "  name: istio-cni-context\ncurrent-context: istio-cni-context\nkind: Config\n"
       "users:\n- name: istio-cni\n  user:\n    token: " +
       token + "\n";
  return y;
}

Installer::Stamp Installer::stamp(const struct stat& st) {
  return {st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec};
}

Result<> Installer::copy_binaries() {
  std::error_code ec;
  for (const auto& src : fs::directory_iterator(cfg_.bin_source_dir, ec)) {
    if (!src.is_regular_file()) continue;
    const std::string name = src.path().filename().string();
    struct stat st {};
    ::stat(src.path().c_str(), &st);
    std::optional<std::string> content;  // read only when a target needs a look
    for (const auto& dir : cfg_.bin_target_dirs) {
      const std::string target = dir + "/" + name;
      // Every inotify event (a conflist rewrite too) comes through here:
      // a target unchanged since we last found it equal is not read again
      // (the plugin is megabytes; this kept conflist repair at ~2 ms).
      struct stat tst {};
      const bool exists = ::lstat(target.c_str(), &tst) == 0 && S_ISREG(tst.st_mode);
      auto it = verified_.find(target);
      if (exists && it != verified_.end() && it->second == std::pair{stamp(st), stamp(tst)}) {
        continue;
      }
      for (const auto& e : fs::directory_iterator(dir, ec)) {  // stale temp files of ours
        if (e.path().filename().string().rfind(name + ".tmp.", 0) == 0) fs::remove(e.path(), ec);
      }
      if (!content) content = slurp(src.path().string());
      if (!exists || slurp(target) != *content) {
        // rename over the old file: a runtime executing it keeps its inode.
        AMBIENT_RETURN_IF_ERROR(write(target, *content, st.st_mode & 07777)
                                    .context("install " + name + " into " + dir));
        if (::lstat(target.c_str(), &tst) != 0) continue;
      }
      verified_[target] = {stamp(st), stamp(tst)};
    }
  }
  if (ec) return make_error(Errc::NotFound, "read " + cfg_.bin_source_dir + ": " + ec.message());
  return {};
}

Result<> Installer::write_kubeconfig() {
  if (!cfg_.write_kubeconfig) return {};
  if (cfg_.k8s_host.empty() || cfg_.k8s_port.empty()) {
    return make_error(Errc::InvalidArgument,
                      "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set");
  }
  std::string host =
      cfg_.k8s_host.find(':') != std::string::npos ? "[" + cfg_.k8s_host + "]" : cfg_.k8s_host;
  const std::string server = cfg_.k8s_protocol + "://" + host + ":" + cfg_.k8s_port;
  const std::string ca =
      cfg_.skip_tls_verify
          ? ""
          : slurp(cfg_.kube_ca_file.empty() ? cfg_.sa_dir + "/ca.crt" : cfg_.kube_ca_file);
  const std::string token = slurp(cfg_.sa_dir + "/token");
  const std::string path = cfg_.run_dir + "/" + std::string(cni::kPluginKubeconfigFile);
  const std::string yaml = kubeconfig_yaml(server, ca, token, cfg_.skip_tls_verify);
  if (is_own_file(path) && slurp(path) == yaml) return {};
  return write(path, yaml, cfg_.kubeconfig_mode).context("write kubeconfig");
}

Result<std::string> Installer::target_config_path() {
  const std::string& dir = cfg_.cni_net_dir;
  if (!cfg_.chained) {
    return dir + "/" + (cfg_.cni_conf_name.empty() ? "YYY-istio-cni.conf" : cfg_.cni_conf_name);
  }
  if (cfg_.istio_owned) return dir + "/" + cfg_.istio_owned_filename;
  if (!cfg_.cni_conf_name.empty()) return named_config_path(dir, cfg_.cni_conf_name);
  AMBIENT_ASSIGN_OR_RETURN(auto files, valid_config_files(dir));
  return files.front();
}

// The primary config of an Istio-owned setup (docs/installer.md#istio-owned):
// the one CNI_CONF_NAME names, found as in the chained case, else the first
// valid file not ours.
static Result<std::string> primary_for_owned(const InstallerConfig& cfg) {
  if (!cfg.cni_conf_name.empty()) return named_config_path(cfg.cni_net_dir, cfg.cni_conf_name);
  AMBIENT_ASSIGN_OR_RETURN(auto files, valid_config_files(cfg.cni_net_dir));
  for (const auto& f : files) {
    if (fs::path(f).filename() != cfg.istio_owned_filename) return f;
  }
  return make_error(Errc::NotFound, "primary CNI config name is not specified");
}

Result<std::string> Installer::install_once() {
  if (auto r = copy_binaries(); !r) {
    metrics::inc(metrics_.copy_binaries_failure);
    return std::move(r).error();
  }
  if (auto r = write_kubeconfig(); !r) {
    metrics::inc(metrics_.create_kubeconfig_failure);
    return std::move(r).error();
  }
  auto path = install_config();
  if (!path) metrics::inc(metrics_.create_cni_config_failure);
  return path;
}

Result<> Installer::write(const std::string& path, const std::string& text, mode_t mode) {
  ++writes_;
  return write_atomic(path, text, mode);
}

void Installer::set_ready(bool ready) {
  ready_ = ready;
  metrics::set(metrics_.ready, ready ? 1 : 0);
}

// The config entry: our own file, or our entry in the primary config.
Result<std::string> Installer::install_config() {
  const mode_t own_mode = cfg_.conf_group_read ? 0640 : 0600;
  if (!cfg_.chained) {
    AMBIENT_ASSIGN_OR_RETURN(std::string path, target_config_path());
    const std::string text = standalone_conf(cfg_.entry);
    if (!is_own_file(path) || slurp(path) != text) {
      AMBIENT_RETURN_IF_ERROR(write(path, text, own_mode));
    }
    config_path_ = path;
    return path;
  }
  if (cfg_.istio_owned) {
    AMBIENT_ASSIGN_OR_RETURN(std::string primary, primary_for_owned(cfg_));
    AMBIENT_ASSIGN_OR_RETURN(
        std::string merged, insert_entry(slurp(primary), cfg_.entry).context("primary " + primary));
    const std::string path = cfg_.cni_net_dir + "/" + cfg_.istio_owned_filename;
    if (!is_own_file(path) || slurp(path) != merged) {
      AMBIENT_RETURN_IF_ERROR(write(path, merged, own_mode));
      ++repairs_;
    }
    config_path_ = path;
    return path;
  }
  AMBIENT_ASSIGN_OR_RETURN(std::string path, target_config_path());
  const std::string current = slurp(path);
  if (has_entry(current, cfg_.entry)) {
    config_path_ = path;
    return path;
  }
  AMBIENT_ASSIGN_OR_RETURN(std::string merged,
                           insert_entry(current, cfg_.entry).context("primary " + path));
  struct stat st {};
  mode_t mode = ::stat(path.c_str(), &st) == 0 ? (st.st_mode & 07777) : own_mode;
  std::string out = path;
  if (ends_with(path, ".conf")) out = path + "list";  // a wrapped .conf becomes a conflist
  AMBIENT_RETURN_IF_ERROR(write(out, merged, mode).context("insert istio-cni into " + out));
  if (out != path) ::unlink(path.c_str());
  ++repairs_;
  log::install().info("istio-cni entry written to {}", out);
  config_path_ = out;
  return out;
}

Result<> Installer::run(const std::atomic<bool>& stop) {
  UniqueFd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!in.valid()) return sys_error("inotify_init1");
  const uint32_t kEvents = IN_CREATE | IN_CLOSE_WRITE | IN_MODIFY | IN_DELETE | IN_MOVED_TO |
                           IN_MOVED_FROM | IN_DELETE_SELF;
  std::vector<std::string> watched = {cfg_.cni_net_dir};
  watched.insert(watched.end(), cfg_.bin_target_dirs.begin(), cfg_.bin_target_dirs.end());
  if (cfg_.write_kubeconfig) watched.push_back(cfg_.sa_dir);
  for (const auto& w : watched) {
    if (fs::exists(w) && ::inotify_add_watch(in.get(), w.c_str(), kEvents) < 0) {
      return sys_error("inotify_add_watch " + w);
    }
  }
  int fights = 0;
  auto last_write = Clock::now() - 1h;
  uint64_t writes_before = repairs_;
  while (!stop) {
    const uint64_t files_written = writes_;
    auto r = install_once();
    // A pass that put something (back) in place, or made us ready, is an
    // install; a re-check that finds all in place, or the echo of our own
    // writes, is not.
    if (r && (writes_ != files_written || !ready_)) metrics::inc(metrics_.success);
    if (!r) {
      set_ready(false);
      log::install().warn("{}", r.error().describe());
    } else {
      set_ready(true);
    }
    if (repairs_ != writes_before) {
      // We had to write. Another writer undoing us within moments, again
      // and again, is a fight (two installers, a CNI that owns its file):
      // back off instead of spinning with it. An occasional rewrite by
      // another CNI is repaired at once.
      auto now = Clock::now();
      fights = now - last_write < 150ms ? fights + 1 : 0;
      last_write = now;
      writes_before = repairs_;
      if (fights >= 5) {
        auto delay = std::min<std::chrono::milliseconds>(10ms * (1 << std::min(fights, 9)), 5s);
        ++throttled_;
        log::install().warn(
            "our CNI config entry keeps being removed ({} rewrites in a row); "
            "throttling for {} ms. Is another CNI installer (e.g. Cilium with "
            "cni.exclusive=true) fighting over {}?",
            fights, delay.count(), config_path_);
        std::this_thread::sleep_for(delay);
        last_write = Clock::now();  // an undo during our pause still counts as a fight
      }
    }
    // Wait for a change (or stop); then drain the burst of events.
    pollfd p{in.get(), POLLIN, 0};
    int rc = ::poll(&p, 1, r ? 200 : 1000);
    if (rc > 0) {
      char buf[4096];
      while (::read(in.get(), buf, sizeof buf) > 0) {
      }
    }
  }
  return {};
}

Result<> Installer::cleanup() {
  std::string errors;
  if (!config_path_.empty() && fs::exists(config_path_)) {
    if (cfg_.chained && !cfg_.istio_owned) {
      // The primary belongs to another CNI: only our entry goes.
      auto text = remove_entry(slurp(config_path_));
      struct stat st {};
      ::stat(config_path_.c_str(), &st);
      auto w = text ? write_atomic(config_path_, *text, st.st_mode & 07777)
                    : Result<>(std::move(text).error());
      if (!w) errors += w.error().describe() + "; ";
    } else {
      ::unlink(config_path_.c_str());  // our own file
    }
  }
  if (cfg_.write_kubeconfig)
    ::unlink((cfg_.run_dir + "/" + std::string(cni::kPluginKubeconfigFile)).c_str());
  for (const auto& dir : cfg_.bin_target_dirs) ::unlink((dir + "/istio-cni").c_str());
  set_ready(false);
  if (!errors.empty()) return make_error(Errc::Internal, "installer cleanup: " + errors);
  return {};
}

}  // namespace ambient::install
