#include "agent/pod_cache.h"

namespace ambient::agent {

void PodCache::upsert(EnrolledPod p) {
  std::lock_guard lk(mu_);
  std::string uid = p.workload.uid;
  pods_[uid] = std::move(p);
}

std::optional<EnrolledPod> PodCache::take(const std::string& uid) {
  std::lock_guard lk(mu_);
  auto it = pods_.find(uid);
  if (it == pods_.end()) return std::nullopt;
  EnrolledPod p = std::move(it->second);
  pods_.erase(it);
  return p;
}

std::optional<EnrolledPod> PodCache::get(const std::string& uid) const {
  std::lock_guard lk(mu_);
  auto it = pods_.find(uid);
  if (it == pods_.end()) return std::nullopt;
  return it->second;
}

std::vector<zds::Workload> PodCache::workloads() const {
  std::lock_guard lk(mu_);
  std::vector<zds::Workload> out;
  for (const auto& [uid, p] : pods_) out.push_back(p.workload);
  return out;
}

std::vector<EnrolledPod> PodCache::all() const {
  std::lock_guard lk(mu_);
  std::vector<EnrolledPod> out;
  out.reserve(pods_.size());
  for (const auto& [uid, p] : pods_) out.push_back(p);
  return out;
}

size_t PodCache::size() const {
  std::lock_guard lk(mu_);
  return pods_.size();
}

}  // namespace ambient::agent
