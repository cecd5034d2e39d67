#include "redirect/kubelet_uid.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <optional>
#include <sstream>
#include <vector>

#include "lib/unique_fd.h"

namespace ambient::redirect {

namespace {

// Plain read(2): this runs for every process on the node at start-up, and
// an ifstream per file made the scan ~14 ms with 450 processes.
std::optional<std::string> read_file(const std::filesystem::path& p) {
  UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Some NUL-separated argument contains "kubelet", case-insensitively.
bool cmdline_names_kubelet(const std::string& cmdline) {
  std::istringstream in(cmdline);
  std::string arg;
  while (std::getline(in, arg, '\0')) {
    if (lower(arg).find("kubelet") != std::string::npos) return true;
  }
  return false;
}

bool is_kubelet(const std::filesystem::path& dir) {
  auto comm = read_file(dir / "comm");
  if (!comm) return false;
  std::string name = *comm;
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r')) name.pop_back();
  if (name == "k3s") return true;
  if (name != "kubelet" && name != "kubelite") return false;
  auto cmdline = read_file(dir / "cmdline");
  return cmdline && cmdline_names_kubelet(*cmdline);
}

// Real UID: the first number of the `Uid:` line.
std::optional<uid_t> real_uid(const std::filesystem::path& dir) {
  auto status = read_file(dir / "status");
  if (!status) return std::nullopt;
  std::istringstream in(*status);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Uid:", 0) != 0) continue;
    std::istringstream fields(line.substr(4));
    unsigned long uid = 0;
    if (fields >> uid && uid <= static_cast<unsigned long>(static_cast<uid_t>(-1))) {
      return static_cast<uid_t>(uid);
    }
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace

Result<uid_t> find_kubelet_uid(const std::string& proc_root) {
  std::error_code ec;
  std::filesystem::directory_iterator it(proc_root, ec);
  if (ec) return sys_error("list " + proc_root, ec.value());
  std::vector<std::string> pids;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (ec) return sys_error("list " + proc_root, ec.value());
    std::string name = it->path().filename().string();
    if (all_digits(name)) pids.push_back(std::move(name));
  }
  std::sort(pids.begin(), pids.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  });
  for (const auto& pid : pids) {
    const std::filesystem::path dir = std::filesystem::path(proc_root) / pid;
    if (!is_kubelet(dir)) continue;
    // A kubelet that exited between the reads is skipped like any other.
    if (auto uid = real_uid(dir)) return *uid;
  }
  return make_error(Errc::NotFound,
                    "no kubelet process under " + proc_root +
                        " (looked for comm \"kubelet\" or \"kubelite\" with \"kubelet\" in its "
                        "command line, or comm \"k3s\")");
}

}  // namespace ambient::redirect
