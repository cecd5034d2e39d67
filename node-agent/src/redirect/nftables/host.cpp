#include "redirect/nftables/host.h"

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netlink.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "lib/unique_fd.h"
#include "log/log.h"
#include "redirect/nftables/nft.h"

namespace ambient::redirect {

namespace {

const std::string kTable = "inet " + std::string(kHostNftTable);
constexpr const char* kSetComment = "UUID of the pods that are part of ambient mesh";

std::string set_name(IpFamily ip) { return std::string(probe_set_name(ip)); }

std::string add_set_cmd(IpFamily ip) {
  return "add set " + kTable + " " + set_name(ip) + " { type " +
         (ip == IpFamily::V6 ? "ipv6_addr" : "ipv4_addr") + " ; comment \"" + kSetComment +
         "\" ; }\n";
}

// nft's error buffer, without the caret lines that point into the input.
std::string clean_error(const std::string& err) {
  std::string out;
  std::istringstream in(err);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" ^~\t") == std::string::npos) continue;
    if (!out.empty()) out += "; ";
    out += line;
  }
  return out;
}

Result<ProbeSetEntry> parse_element(const nlohmann::json& e) {
  // A bare element is a string; one with a comment is {"elem": {"val", "comment"}}.
  const nlohmann::json* val = &e;
  std::string comment;
  if (e.is_object() && e.contains("elem") && e["elem"].is_object()) {
    const auto& inner = e["elem"];
    if (inner.contains("val")) val = &inner["val"];
    if (inner.contains("comment") && inner["comment"].is_string()) {
      comment = inner["comment"].get<std::string>();
    }
  }
  if (!val->is_string()) {
    return make_error(Errc::Internal, "unexpected set element in nft JSON: " + e.dump());
  }
  AMBIENT_ASSIGN_OR_RETURN(IpAddress ip, IpAddress::parse(val->get<std::string>()));
  return ProbeSetEntry{.ip = ip, .uid = std::move(comment)};
}

// The "nftables" array of `nft -j` output. Every access below checks types
// first: nlohmann throws on a type mismatch, and our code throws nothing.
Result<nlohmann::json> json_items(const std::string& text) {
  auto doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("nftables") ||
      !doc["nftables"].is_array()) {
    return make_error(Errc::Internal, "nft: unexpected JSON output");
  }
  return std::move(doc["nftables"]);
}

// item[key] when item is an object whose `key` is an object, else nullptr.
const nlohmann::json* member_object(const nlohmann::json& item, const char* key) {
  if (!item.is_object()) return nullptr;
  auto it = item.find(key);
  return it != item.end() && it->is_object() ? &*it : nullptr;
}

std::string string_member(const nlohmann::json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

// One NEWSETELEM with NLM_F_EXCL in its own batch, as `nft create element`
// sends it: the key, and the pod UID as the element's comment, encoded
// the way nft encodes comments (so nft and our listings read it back).
// errno-style result: 0, EEXIST (the IP is in the set), ENOENT (no table
// or set yet), or another error.
class NftablesHostRedirect::ElementCreator {
 public:
  ~ElementCreator() {
    if (sock_) mnl_socket_close(sock_);
  }
  int create(const std::string& set_name, const IpAddress& ip, const std::string& comment) {
    if (!sock_) {
      // In the calling thread's netns: the host's (see the header).
      sock_ = mnl_socket_open(NETLINK_NETFILTER);
      if (!sock_) return errno;
      if (mnl_socket_bind(sock_, 0, MNL_SOCKET_AUTOPID) < 0) {
        int e = errno;
        mnl_socket_close(sock_);
        sock_ = nullptr;
        return e;
      }
    }
    std::unique_ptr<nftnl_set, void (*)(const nftnl_set*)> set(nftnl_set_alloc(), nftnl_set_free);
    nftnl_set_elem* elem = nftnl_set_elem_alloc();
    nftnl_udata_buf* udata = nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN);
    if (!set || !elem || !udata) {
      if (elem) nftnl_set_elem_free(elem);
      if (udata) nftnl_udata_buf_free(udata);
      return ENOMEM;
    }
    nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, std::string(kHostNftTable).c_str());
    nftnl_set_set_str(set.get(), NFTNL_SET_NAME, set_name.c_str());
    nftnl_set_elem_set(elem, NFTNL_SET_ELEM_KEY, ip.bytes.data(), static_cast<uint32_t>(ip.size()));
    nftnl_udata_put_strz(udata, NFTNL_UDATA_SET_ELEM_COMMENT, comment.c_str());
    nftnl_set_elem_set(elem, NFTNL_SET_ELEM_USERDATA, nftnl_udata_buf_data(udata),
                       nftnl_udata_buf_len(udata));
    nftnl_udata_buf_free(udata);
    nftnl_set_elem_add(set.get(), elem);  // the set owns it now

    std::array<char, 4096> buf{};
    mnl_nlmsg_batch* batch = mnl_nlmsg_batch_start(buf.data(), buf.size());
    nftnl_batch_begin(static_cast<char*>(mnl_nlmsg_batch_current(batch)), seq_++);
    mnl_nlmsg_batch_next(batch);
    const uint32_t seq = seq_++;
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(static_cast<char*>(mnl_nlmsg_batch_current(batch)),
                                          NFT_MSG_NEWSETELEM, NFPROTO_INET,
                                          NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, seq);
    nftnl_set_elems_nlmsg_build_payload(nlh, set.get());
    mnl_nlmsg_batch_next(batch);
    nftnl_batch_end(static_cast<char*>(mnl_nlmsg_batch_current(batch)), seq_++);
    mnl_nlmsg_batch_next(batch);
    const ssize_t sent =
        mnl_socket_sendto(sock_, mnl_nlmsg_batch_head(batch), mnl_nlmsg_batch_size(batch));
    mnl_nlmsg_batch_stop(batch);
    if (sent < 0) return errno;
    // The kernel answers the element's ACK (or its error) before sendto
    // returns; read until that one.
    // An error answer quotes our request (< 4 KiB): 8 KiB holds either.
    std::array<char, 8192> reply{};
    for (;;) {
      ssize_t n = mnl_socket_recvfrom(sock_, reply.data(), reply.size());
      if (n < 0) return errno;
      int r = mnl_cb_run(reply.data(), static_cast<size_t>(n), seq, mnl_socket_get_portid(sock_),
                         nullptr, nullptr);
      if (r == MNL_CB_ERROR) return errno;
      if (r == MNL_CB_STOP) return 0;
    }
  }

 private:
  mnl_socket* sock_ = nullptr;
  uint32_t seq_ = static_cast<uint32_t>(::time(nullptr));
};

NftablesHostRedirect::NftablesHostRedirect() : creator_(std::make_unique<ElementCreator>()) {}
NftablesHostRedirect::~NftablesHostRedirect() = default;

Result<std::string> NftablesHostRedirect::run_nft(const std::string& commands, bool json) {
  std::lock_guard lock(ctx_mu_);
  if (!ctx_) {
    AMBIENT_ASSIGN_OR_RETURN(NftContext ctx, NftContext::create());
    ctx_.emplace(std::move(ctx));
  }
  ctx_->set_json(json);
  auto out = ctx_->run(commands);
  if (!out) {
    Error e = std::move(out).error();
    e.message = clean_error(e.message);
    return e;
  }
  return out;
}

Result<NftablesHostRedirect::TableState> NftablesHostRedirect::read_table() {
  TableState state;
  AMBIENT_ASSIGN_OR_RETURN(std::string tables, run_nft("list tables inet", true));
  AMBIENT_ASSIGN_OR_RETURN(nlohmann::json tables_items, json_items(tables));
  for (const auto& item : tables_items) {
    if (const auto* t = member_object(item, "table");
        t && string_member(*t, "name") == kHostNftTable) {
      state.exists = true;
    }
  }
  if (!state.exists) return state;
  AMBIENT_ASSIGN_OR_RETURN(std::string listing, run_nft("list table " + kTable, true));
  AMBIENT_ASSIGN_OR_RETURN(nlohmann::json listing_items, json_items(listing));
  for (const auto& item : listing_items) {
    if (const auto* c = member_object(item, "chain")) {
      state.chains.insert(string_member(*c, "name"));
    }
    const auto* s = member_object(item, "set");
    if (!s) continue;
    auto& entries = state.sets[string_member(*s, "name")];
    const auto elems = s->value("elem", nlohmann::json::array());
    if (!elems.is_array()) return make_error(Errc::Internal, "nft JSON: set elem is not a list");
    for (const auto& e : elems) {
      AMBIENT_ASSIGN_OR_RETURN(ProbeSetEntry entry, parse_element(e));
      entries.push_back(std::move(entry));
    }
  }
  return state;
}

Result<> NftablesHostRedirect::install_rules(const HostProbeConfig& cfg) {
  ipv6_ = cfg.ipv6;
  // The rules name the sets, so they are added first in the same
  // transaction; `flush table` in host_nft_text keeps them and their
  // elements (nftables 1.0.6; the integration test guards it).
  std::string tx = "add table " + kTable + "\n" + add_set_cmd(IpFamily::V4);
  if (cfg.ipv6) tx += add_set_cmd(IpFamily::V6);
  tx += host_nft_text(cfg);
  auto r = run_nft(tx);
  if (!r) return std::move(r).error().context("install nftables host rules");
  return {};
}

Result<> NftablesHostRedirect::remove_rules() {
  AMBIENT_ASSIGN_OR_RETURN(TableState state, read_table().context("remove nftables host rules"));
  if (!state.chains.count("postrouting")) return {};
  auto r =
      run_nft("flush chain " + kTable + " postrouting\ndelete chain " + kTable + " postrouting\n");
  if (!r) return std::move(r).error().context("remove nftables host rules");
  return {};
}

Result<> NftablesHostRedirect::ensure_sets(bool ipv6) {
  ipv6_ = ipv6;
  std::string tx = "add table " + kTable + "\n" + add_set_cmd(IpFamily::V4);
  if (ipv6) tx += add_set_cmd(IpFamily::V6);
  auto r = run_nft(tx);
  if (!r) return std::move(r).error().context("create nftables probe sets");
  return {};
}

Result<> NftablesHostRedirect::flush_sets() {
  AMBIENT_ASSIGN_OR_RETURN(TableState state, read_table().context("flush nftables probe sets"));
  std::string tx;
  for (IpFamily ip : kIpFamilies) {
    if (state.sets.count(set_name(ip))) tx += "flush set " + kTable + " " + set_name(ip) + "\n";
  }
  if (tx.empty()) return {};
  std::lock_guard lock(entries_mu_);
  auto r = run_nft(tx);
  if (!r) return std::move(r).error().context("flush nftables probe sets");
  listed_.clear();
  return {};
}

Result<> NftablesHostRedirect::destroy_sets() {
  AMBIENT_ASSIGN_OR_RETURN(TableState state, read_table().context("delete nftables table"));
  if (!state.exists) return {};
  std::lock_guard lock(entries_mu_);
  auto r = run_nft("delete table " + kTable + "\n");
  if (!r) return std::move(r).error().context("delete nftables table");
  listed_.clear();
  return {};
}

Result<> NftablesHostRedirect::add_pod_ip(const IpAddress& pod_ip, const std::string& pod_uid) {
  AMBIENT_ASSIGN_OR_RETURN(auto wanted, probe_set_address(pod_ip, pod_uid, ipv6_));
  if (!wanted) return {};
  const IpAddress addr = *wanted;
  const IpFamily ip = ip_family_of(addr);
  const std::string elem = "element " + kTable + " " + set_name(ip) + " { " + addr.to_string();
  const std::string prefix = "add table " + kTable + "\n" + add_set_cmd(ip);
  std::lock_guard lock(entries_mu_);
  if (!listed_.count(addr.to_string())) {
    // A new IP, the usual case: `create` fails if the element exists. It
    // deletes nothing, so the commit leaves no destroy work for the kernel,
    // whose RCU wait would otherwise stall the next netlink socket close
    // (redirect/nftables/nft.h), a pod's included. (A failed batch costs such a
    // wait too, hence listed_, which knows the IPs we added.) Sent with
    // libnftnl: ~20 us instead of ~90, and outside libnftables' lock, so
    // beside other pods' transactions.
    int e = creator_->create(set_name(ip), addr, pod_uid);
    if (e == 0) {
      listed_.insert(addr.to_string());
      return {};
    }
    if (e == ENOENT) {  // no table or set (yet, or deleted by someone): nft makes them
      auto created = run_nft(prefix + "create " + elem + " comment \"" + pod_uid + "\" }\n");
      if (created) {
        listed_.insert(addr.to_string());
        return {};
      }
      if (created.error().message.find("File exists") == std::string::npos) {
        return std::move(created).error().context("add " + addr.to_string() + " to probe set");
      }
    } else if (e != EEXIST) {
      return make_error(Errc::Internal,
                        "add " + addr.to_string() + " to probe set: netlink: " + std::strerror(e));
    }
  }
  // The IP is listed already (a reused IP, or a retried ADD): add (so the
  // delete cannot fail), delete, add with the comment, so the element
  // takes the new owner atomically.
  std::string tx = prefix + "add " + elem + " }\n";
  tx += "delete " + elem + " }\n";
  tx += "add " + elem + " comment \"" + pod_uid + "\" }\n";
  auto r = run_nft(tx);
  if (!r) return std::move(r).error().context("add " + addr.to_string() + " to probe set");
  listed_.insert(addr.to_string());
  return {};
}

Result<> NftablesHostRedirect::remove_pod_ip(const IpAddress& pod_ip, const std::string& pod_uid) {
  const IpAddress addr = pod_ip.unmapped();
  const IpFamily ip = ip_family_of(addr);
  const std::string what = "remove " + addr.to_string() + " from probe set";
  std::lock_guard lock(entries_mu_);
  AMBIENT_ASSIGN_OR_RETURN(TableState state, read_table().context(what));
  auto set = state.sets.find(set_name(ip));
  if (set == state.sets.end()) return {};
  for (const auto& e : set->second) {
    if (e.ip != addr) continue;
    if (e.uid != pod_uid) {
      log::warn("probe set: {} belongs to pod {}, not {}: kept", addr.to_string(), e.uid, pod_uid);
      return {};
    }
    auto r = run_nft("delete element " + kTable + " " + set_name(ip) + " { " + addr.to_string() +
                     " }\n");
    if (!r) return std::move(r).error().context(what);
    listed_.erase(addr.to_string());
    return {};
  }
  return {};
}

Result<std::vector<ProbeSetEntry>> NftablesHostRedirect::list_sets() {
  AMBIENT_ASSIGN_OR_RETURN(TableState state, read_table().context("list nftables probe sets"));
  std::vector<ProbeSetEntry> all;
  for (IpFamily ip : kIpFamilies) {
    auto it = state.sets.find(set_name(ip));
    if (it != state.sets.end()) all.insert(all.end(), it->second.begin(), it->second.end());
  }
  return all;
}

}  // namespace ambient::redirect
