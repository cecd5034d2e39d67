#include "agent/standalone_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent/agent.h"
#include "lib/file.h"
#include "lib/unique_fd.h"
#include "log/log.h"

namespace ambient::agent {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;  // keys in the order written: version first

namespace {

// Temp file in the same directory, fsync, rename, fsync of the directory:
// a reader (the next agent) sees the old or the new set, never half of
// one, and the new one survives a crash right after. Writes are
// serialised by the caller, so the temp name only has to differ from
// another process's.
Result<> replace_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return sys_error("create " + tmp);
  auto fail = [&](const std::string& step) {
    Error e = sys_error(step);
    ::unlink(tmp.c_str());
    return e;
  };
  for (size_t done = 0; done < text.size();) {
    ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("write " + tmp);
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return fail("fsync " + tmp);
  if (::close(fd.release()) != 0) return fail("close " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("rename " + tmp + " to " + path);
  const std::string dir = fs::path(path).parent_path().string();
  UniqueFd d(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d.valid() || ::fsync(d.get()) != 0) return sys_error("fsync directory " + dir);
  return {};
}

std::string read_boot_id(const std::string& path) {
  auto text = read_whole_file(path);
  if (!text) {
    log::warn("cannot read this boot's ID ({}): stored enrollments are not checked against reboots",
              text.error().describe());
    return "";
  }
  std::string id = std::move(*text);
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

std::string netns_id(uint64_t dev, uint64_t ino) {
  return std::to_string(dev) + ":" + std::to_string(ino);
}

}  // namespace

StoredPod stored_pod(const PodIdentity& pod, const netns::Netns& ns) {
  return {.pod = pod,
          .netns_path = ns.path(),
          .netns_dev = static_cast<uint64_t>(ns.device()),
          .netns_ino = static_cast<uint64_t>(ns.inode())};
}

namespace {

// One pod's entry in the file's "pods" list.
std::string encode_pod(const StoredPod& p) {
  Json ips = Json::array();
  for (const auto& ip : p.pod.ips) ips.push_back(ip.to_string());
  Json annotations = Json::object();
  for (const auto& [k, v] : p.pod.annotations) annotations[k] = v;
  const Json pod = {{"uid", p.pod.uid},
                    {"name", p.pod.info.name},
                    {"namespace", p.pod.info.ns},
                    {"service_account", p.pod.info.service_account},
                    {"container_id", p.pod.container_id},
                    {"netns", {{"path", p.netns_path}, {"dev", p.netns_dev}, {"ino", p.netns_ino}}},
                    {"ips", std::move(ips)},
                    {"annotations", std::move(annotations)}};
  return pod.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// The file from its pods' entries, each encoded once when the pod was put:
// a rewrite is then a copy, not a new document of every pod.
std::string assemble_store(const std::string& boot_id,
                           const std::vector<const std::string*>& pods) {
  const Json empty = {
      {"version", kStandaloneStoreVersion}, {"boot_id", boot_id}, {"pods", Json::array()}};
  std::string text = empty.dump(-1, ' ', false, Json::error_handler_t::replace);
  text.resize(text.size() - 2);  // "]}"
  size_t size = text.size() + 3;
  for (const std::string* p : pods) size += p->size() + 1;
  text.reserve(size);
  for (size_t i = 0; i < pods.size(); ++i) {
    if (i > 0) text += ',';
    text += *pods[i];
  }
  text += "]}\n";
  return text;
}

}  // namespace

std::string encode_store(const StoreContents& contents) {
  std::vector<std::string> pods;
  pods.reserve(contents.pods.size());
  for (const auto& p : contents.pods) pods.push_back(encode_pod(p));
  std::vector<const std::string*> refs;
  refs.reserve(pods.size());
  for (const auto& p : pods) refs.push_back(&p);
  return assemble_store(contents.boot_id, refs);
}

Result<StoreContents> decode_store(std::string_view text) {
  Json doc = Json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return make_error(Errc::InvalidArgument, "not a JSON object");
  }
  auto version = doc.find("version");
  if (version == doc.end() || !version->is_number_integer()) {
    return make_error(Errc::InvalidArgument, "no version");
  }
  if (*version != kStandaloneStoreVersion) {
    return make_error(Errc::InvalidArgument, "unknown version " + version->dump() +
                                                 " (this agent reads version " +
                                                 std::to_string(kStandaloneStoreVersion) + ")");
  }
  StoreContents out;
  try {
    out.boot_id = doc.at("boot_id").get<std::string>();
    const Json& pods = doc.at("pods");
    if (!pods.is_array()) return make_error(Errc::InvalidArgument, "pods is not a list");
    for (const auto& j : pods) {
      StoredPod p;
      p.pod.uid = j.at("uid").get<std::string>();
      p.pod.info.name = j.at("name").get<std::string>();
      p.pod.info.ns = j.at("namespace").get<std::string>();
      p.pod.info.service_account = j.at("service_account").get<std::string>();
      p.pod.container_id = j.at("container_id").get<std::string>();
      const auto& ns = j.at("netns");
      p.netns_path = ns.at("path").get<std::string>();
      p.netns_dev = ns.at("dev").get<uint64_t>();
      p.netns_ino = ns.at("ino").get<uint64_t>();
      const Json& ips = j.at("ips");
      const Json& annotations = j.at("annotations");
      if (!ips.is_array() || !annotations.is_object()) {
        return make_error(Errc::InvalidArgument,
                          "pod " + p.pod.uid + ": ips is not a list or annotations not an object");
      }
      for (const auto& ip : ips) {
        auto parsed = IpAddress::parse(ip.get<std::string>());
        if (!parsed) return std::move(parsed).error().context("pod " + p.pod.uid);
        p.pod.ips.push_back(*parsed);
      }
      for (const auto& [k, v] : annotations.items()) {
        p.pod.annotations[k] = v.get<std::string>();
      }
      if (p.pod.uid.empty() || p.netns_path.empty()) {
        return make_error(Errc::InvalidArgument, "a pod without a UID or a netns path");
      }
      out.pods.push_back(std::move(p));
    }
  } catch (const nlohmann::json::exception& e) {
    return make_error(Errc::InvalidArgument, e.what());
  }
  return out;
}

StandaloneStore::StandaloneStore(std::string path, const std::string& boot_id_path,
                                 prometheus::Counter* write_failures)
    : path_(std::move(path)),
      boot_id_(read_boot_id(boot_id_path)),
      failures_metric_(write_failures) {}

std::vector<StoredPod> StandaloneStore::load() {
  // Temp files of writes a crash interrupted (ours are named by pid).
  std::error_code ec;
  const fs::path file(path_);
  const std::string tmp_prefix = file.filename().string() + ".tmp.";
  for (fs::directory_iterator it(file.parent_path(), ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ignored;
    if (it->path().filename().string().rfind(tmp_prefix, 0) == 0) fs::remove(it->path(), ignored);
  }
  auto set_aside = [&](const std::string& why) {
    const std::string bad = path_ + ".bad";
    if (::rename(path_.c_str(), bad.c_str()) != 0) {
      const Error e = sys_error("rename to " + bad);
      log::warn(
          "standalone mode: {} {}, and cannot be moved aside ({}): starting with no enrolled "
          "pods; ztunnel drains those of the previous run",
          path_, why, e.describe());
    } else {
      log::warn(
          "standalone mode: {} {}: moved aside to {}, starting with no enrolled pods; "
          "ztunnel drains those of the previous run",
          path_, why, bad);
    }
    return std::vector<StoredPod>();
  };
  auto text = read_whole_file(path_);
  if (!text) {
    if (text.error().code == std::error_code(ENOENT, std::system_category())) {
      log::info("standalone mode: no enrolled pods stored ({} does not exist)", path_);
      return {};
    }
    return set_aside("cannot be read (" + text.error().describe() + ")");
  }
  auto contents = decode_store(*text);
  if (!contents) return set_aside("is damaged: " + contents.error().describe());
  if (!boot_id_.empty() && !contents->boot_id.empty() && contents->boot_id != boot_id_) {
    log::info(
        "standalone mode: {} is from before the node rebooted: the netns of its {} pods "
        "are gone, none restored",
        path_, contents->pods.size());
    return {};
  }
  return std::move(contents->pods);
}

void StandaloneStore::put(const StoredPod& p) {
  uint64_t generation;
  std::string encoded = encode_pod(p);
  {
    std::lock_guard lk(mu_);
    pods_[p.pod.uid] = std::move(encoded);
    generation = ++generation_;
  }
  commit(generation);
}

void StandaloneStore::erase(const std::string& uid) {
  uint64_t generation;
  {
    std::lock_guard lk(mu_);
    if (pods_.erase(uid) == 0) return;
    generation = ++generation_;
  }
  commit(generation);
}

void StandaloneStore::reset(const std::vector<StoredPod>& pods) {
  uint64_t generation;
  {
    std::lock_guard lk(mu_);
    pods_.clear();
    for (const auto& p : pods) pods_[p.pod.uid] = encode_pod(p);
    generation = ++generation_;
  }
  commit(generation);
}

// Whoever writes takes every change made so far: callers that queued
// behind a write find their change written and return at once.
void StandaloneStore::commit(uint64_t generation) {
  std::lock_guard w(write_mu_);
  if (written_ >= generation) return;
  write_locked();
}

void StandaloneStore::flush() {
  std::lock_guard w(write_mu_);
  if (unsaved_) write_locked();
}

void StandaloneStore::write_locked() {
  std::string text;
  {
    std::lock_guard lk(mu_);
    written_ = generation_;
    std::vector<const std::string*> pods;
    pods.reserve(pods_.size());
    for (const auto& [uid, p] : pods_) pods.push_back(&p);
    text = assemble_store(boot_id_, pods);
  }
  auto r = replace_file(path_, text);
  if (r) {
    if (unsaved_) log::info("standalone mode: the enrolled pods are saved to {} again", path_);
    unsaved_ = false;
    return;
  }
  ++failures_;
  metrics::inc(failures_metric_);
  if (unsaved_) {  // a retry: said once already
    log::debug("standalone mode: saving the enrolled pods to {} failed again: {}", path_,
               r.error().describe());
    return;
  }
  unsaved_ = true;
  // Retried every few seconds (flush), and the next change rewrites the
  // whole file: one success repairs it.
  log::error(
      "standalone mode: saving the enrolled pods to {} failed: {}. Enrollment goes on and the "
      "save is retried, but if the agent restarts before one succeeds, ztunnel drains the pods "
      "enrolled since the last good one",
      path_, r.error().describe());
}

Reopened reopen_netns(const StoredPod& p) {
  struct stat st {};
  if (::stat(p.netns_path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return {NetnsFate::Gone, nullptr, "no such path"};
    return {NetnsFate::Unreachable, nullptr, sys_error("stat " + p.netns_path).describe()};
  }
  auto ns = netns::Netns::open(p.netns_path);
  if (!ns) return {NetnsFate::Unreachable, nullptr, ns.error().describe()};
  if (static_cast<uint64_t>(ns->device()) != p.netns_dev ||
      static_cast<uint64_t>(ns->inode()) != p.netns_ino) {
    return {NetnsFate::Gone, nullptr,
            "the path names another netns now (" + netns_id(ns->device(), ns->inode()) +
                ", the pod's was " + netns_id(p.netns_dev, p.netns_ino) + ")"};
  }
  return {NetnsFate::Same, std::make_shared<const netns::Netns>(std::move(*ns)), ""};
}

namespace {
constexpr size_t kRestoreParallelism = 4;
}  // namespace

RestoreCounts restore_enrollments(StandaloneStore& store, Agent& agent, bool reconcile_rules) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const std::vector<StoredPod> stored = store.load();
  std::vector<char> keep(stored.size(), 0);
  std::atomic<size_t> next{0}, adopted{0}, kept{0};
  // A few pods at a time, as the Kubernetes rebuild does: checking rules
  // is mostly waiting on netlink and iptables processes, and ztunnel gets
  // no snapshot until every pod is done.
  auto restore = [&] {
    for (size_t i; (i = next++) < stored.size();) {
      const StoredPod& p = stored[i];
      auto found = reopen_netns(p);
      if (found.fate == NetnsFate::Gone) {
        log::info("pod {}: netns {} is gone ({}): not restored, ztunnel drains it", p.pod.name(),
                  p.netns_path, found.why);
        continue;
      }
      if (found.fate == NetnsFate::Unreachable) {
        log::warn(
            "pod {}: netns {} exists but cannot be opened ({}): restored without it, "
            "ztunnel keeps the proxy it runs",
            p.pod.name(), p.netns_path, found.why);
        ++kept;
      } else {
        ++adopted;
      }
      keep[i] = 1;
      if (auto r = agent.adopt_pod(p.pod, found.ns, reconcile_rules); !r) {
        log::error(
            "failed to reconcile inpod rules for pod, try restarting the pod, or removing and "
            "re-adding it to the mesh: {}",
            r.error().describe());
      }
    }
  };
  std::vector<std::thread> workers;
  for (size_t w = 1; w < std::min(kRestoreParallelism, stored.size()); ++w) {
    workers.emplace_back(restore);
  }
  restore();
  for (auto& t : workers) t.join();
  std::vector<StoredPod> survivors;
  for (size_t i = 0; i < stored.size(); ++i) {
    if (keep[i]) survivors.push_back(stored[i]);
  }
  // Nothing stored means nothing to rewrite (and maybe no run dir yet).
  if (!stored.empty()) store.reset(survivors);
  const RestoreCounts counts{
      .adopted = adopted, .kept = kept, .dropped = stored.size() - survivors.size()};
  log::info(
      "startup: {} standalone enrollments restored from {} ({} without a netns, sent as Keep; {} "
      "dropped, their netns gone; rules verified in {:.1f} ms)",
      survivors.size(), store.path(), counts.kept, counts.dropped,
      std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  return counts;
}

}  // namespace ambient::agent
