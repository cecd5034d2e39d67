#include "redirect/netfilter_state.h"

#include <libiptc/libiptc.h>
extern "C" {  // unlike libiptc.h, libip6tc.h does not say so itself
#include <libiptc/libip6tc.h>
}
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace ambient::redirect {

namespace {

// One NLM_F_DUMP request on a fresh NETLINK_NETFILTER socket (so in the
// calling thread's netns); `each` sees every message of the answer.
// A socket that committed nothing closes without waiting (see nftables/nft.h).
Result<> nf_tables_dump(uint16_t msg_type, uint16_t family, const char* what,
                        const std::function<Result<>(const nlmsghdr*)>& each) {
  std::unique_ptr<mnl_socket, int (*)(mnl_socket*)> sock(mnl_socket_open(NETLINK_NETFILTER),
                                                         mnl_socket_close);
  if (!sock) return sys_error("netlink socket (NETLINK_NETFILTER)");
  if (mnl_socket_bind(sock.get(), 0, MNL_SOCKET_AUTOPID) < 0) return sys_error("netlink bind");
  // The kernel sizes a dump's datagrams to what the reader's recvmsg takes
  // (and starts at most a page): libnftnl's own dump examples use this size.
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  const uint32_t seq = 1;
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), msg_type, family, NLM_F_DUMP, seq);
  const std::string step = std::string("netlink: list nf_tables ") + what;
  if (mnl_socket_sendto(sock.get(), nlh, nlh->nlmsg_len) < 0) return sys_error(step);
  struct Ctx {
    const std::function<Result<>(const nlmsghdr*)>* each;
    Result<> result;
  } ctx{&each, {}};
  auto cb = [](const nlmsghdr* m, void* data) {
    auto* c = static_cast<Ctx*>(data);
    c->result = (*c->each)(m);
    return c->result ? MNL_CB_OK : MNL_CB_ERROR;
  };
  for (;;) {
    ssize_t n = mnl_socket_recvfrom(sock.get(), buf.data(), buf.size());
    if (n < 0) return sys_error(step);
    int r = mnl_cb_run(buf.data(), static_cast<size_t>(n), seq, mnl_socket_get_portid(sock.get()),
                       cb, &ctx);
    if (!ctx.result) return std::move(ctx.result).error().context(step);
    // EINTR: the rule set changed during the dump (NLM_F_DUMP_INTR).
    if (r == MNL_CB_ERROR) return sys_error(step);
    if (r == MNL_CB_STOP) return {};
  }
}

template <auto Free>
struct Freer {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};
template <typename T, auto Free>
using NftnlPtr = std::unique_ptr<T, Freer<Free>>;

// Appends one object as libnftnl serialises it: a netlink message whose
// payload holds exactly the attributes left set.
template <typename Build>
void append_message(std::string& out, uint16_t msg_type, uint16_t family, Build&& build) {
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), msg_type, family, 0, 0);
  build(nlh);
  out.append(reinterpret_cast<const char*>(nlh), nlh->nlmsg_len);
}

Result<> bad_message(const char* what) {
  return make_error(Errc::Internal, std::string("cannot parse the kernel's nf_tables ") + what);
}

}  // namespace

Result<size_t> count_tables_here() {
  size_t tables = 0;
  AMBIENT_RETURN_IF_ERROR(
      nf_tables_dump(NFT_MSG_GETTABLE, NFPROTO_UNSPEC, "tables", [&](const nlmsghdr*) -> Result<> {
        ++tables;
        return {};
      }));
  return tables;
}

Result<std::string> nf_tables_fingerprint_here(uint8_t family) {
  std::string out;
  // Three dumps, not one snapshot. Every message carries the ruleset's
  // generation (the low 16 bits, in nfgenmsg's res_id), so a change between
  // the dumps shows as a second value (one during a dump sets DUMP_INTR).
  std::optional<uint16_t> generation;
  auto same_generation = [&](const nlmsghdr* m) -> Result<> {
    const auto* g = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(m));
    if (generation && *generation != g->res_id) {
      return make_error(Errc::Unavailable, "the ruleset changed while it was read");
    }
    generation = g->res_id;
    return {};
  };
  AMBIENT_RETURN_IF_ERROR(
      nf_tables_dump(NFT_MSG_GETTABLE, family, "tables", [&](const nlmsghdr* m) -> Result<> {
        if (auto same = same_generation(m); !same) return same;
        NftnlPtr<nftnl_table, nftnl_table_free> t(nftnl_table_alloc());
        if (!t || nftnl_table_nlmsg_parse(m, t.get()) < 0) return bad_message("table");
        nftnl_table_unset(t.get(), NFTNL_TABLE_HANDLE);
        nftnl_table_unset(t.get(), NFTNL_TABLE_OWNER);  // the owning socket's port id
        append_message(out, NFT_MSG_NEWTABLE, nftnl_table_get_u32(t.get(), NFTNL_TABLE_FAMILY),
                       [&](nlmsghdr* n) { nftnl_table_nlmsg_build_payload(n, t.get()); });
        return {};
      }));
  AMBIENT_RETURN_IF_ERROR(
      nf_tables_dump(NFT_MSG_GETCHAIN, family, "chains", [&](const nlmsghdr* m) -> Result<> {
        if (auto same = same_generation(m); !same) return same;
        NftnlPtr<nftnl_chain, nftnl_chain_free> c(nftnl_chain_alloc());
        if (!c || nftnl_chain_nlmsg_parse(m, c.get()) < 0) return bad_message("chain");
        for (uint16_t a : {NFTNL_CHAIN_HANDLE, NFTNL_CHAIN_PACKETS, NFTNL_CHAIN_BYTES}) {
          nftnl_chain_unset(c.get(), a);
        }
        append_message(out, NFT_MSG_NEWCHAIN, nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_FAMILY),
                       [&](nlmsghdr* n) { nftnl_chain_nlmsg_build_payload(n, c.get()); });
        return {};
      }));
  AMBIENT_RETURN_IF_ERROR(
      nf_tables_dump(NFT_MSG_GETRULE, family, "rules", [&](const nlmsghdr* m) -> Result<> {
        if (auto same = same_generation(m); !same) return same;
        NftnlPtr<nftnl_rule, nftnl_rule_free> r(nftnl_rule_alloc());
        if (!r || nftnl_rule_nlmsg_parse(m, r.get()) < 0) return bad_message("rule");
        nftnl_rule_unset(r.get(), NFTNL_RULE_HANDLE);
        nftnl_rule_unset(r.get(), NFTNL_RULE_POSITION);
        NftnlPtr<nftnl_expr_iter, nftnl_expr_iter_destroy> it(nftnl_expr_iter_create(r.get()));
        if (!it) return bad_message("rule's expressions");
        for (nftnl_expr* e = nftnl_expr_iter_next(it.get()); e;
             e = nftnl_expr_iter_next(it.get())) {
          const char* name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
          if (name && std::strcmp(name, "counter") == 0) {
            nftnl_expr_set_u64(e, NFTNL_EXPR_CTR_PACKETS, 0);
            nftnl_expr_set_u64(e, NFTNL_EXPR_CTR_BYTES, 0);
          }
        }
        append_message(out, NFT_MSG_NEWRULE, nftnl_rule_get_u32(r.get(), NFTNL_RULE_FAMILY),
                       [&](nlmsghdr* n) { nftnl_rule_nlmsg_build_payload(n, r.get()); });
        return {};
      }));
  return out;
}

namespace {

// The names in /proc/net/{ip,ip6}_tables_names of the calling thread's
// netns (thread-self: /proc/self/net is the main thread's netns).
Result<std::vector<std::string>> xtables_legacy_tables(IpFamily ip) {
  const std::string path = std::string("/proc/thread-self/net/") +
                           (ip == IpFamily::V6 ? "ip6_tables_names" : "ip_tables_names");
  std::ifstream in(path);
  std::vector<std::string> names;
  if (!in) {
    // No such file: the ip(6)_tables module is not loaded, so no netns has
    // a legacy table.
    if (errno == ENOENT) return names;
    return sys_error("read " + path);
  }
  for (std::string name; std::getline(in, name);) {
    if (!name.empty()) names.push_back(name);
  }
  return names;
}

// libiptc's error reporting goes through a process-wide variable.
std::mutex& libiptc_mutex() {
  static std::mutex mu;
  return mu;
}

// One IP family's walk; the v4 and v6 libraries differ only in names.
template <typename Entry, typename Api>
Result<> append_xtables_table(std::string& out, const std::string& table, const Api& api) {
  std::unique_ptr<xtc_handle, void (*)(xtc_handle*)> h(api.init(table.c_str()), api.free);
  if (!h) {
    return make_error(Errc::Internal, "libiptc: read table " + table + ": " + api.strerror(errno));
  }
  out.append("*").append(table).append("\n");
  for (const char* chain = api.first_chain(h.get()); chain; chain = api.next_chain(h.get())) {
    out.append(":").append(chain);
    xt_counters unused{};
    if (api.builtin(chain, h.get())) {
      const char* policy = api.get_policy(chain, &unused, h.get());
      out.append(" ").append(policy ? policy : "-");
    }
    out += "\n";
    for (const Entry* e = api.first_rule(chain, h.get()); e; e = api.next_rule(e, h.get())) {
      std::string entry(reinterpret_cast<const char*>(e), e->next_offset);
      auto* copy = reinterpret_cast<Entry*>(entry.data());
      copy->counters = {};
      // The kernel writes a match's or target's name only up to its NUL;
      // the rest of the field is whatever libiptc's buffer held.
      auto clear_name_tail = [](char* name) {
        const size_t len = ::strnlen(name, XT_EXTENSION_MAXNAMELEN);
        std::memset(name + len, 0, XT_EXTENSION_MAXNAMELEN - len);
      };
      xt_entry_match* m;
      xt_ematch_foreach(m, copy) clear_name_tail(m->u.user.name);
      auto* t = reinterpret_cast<xt_entry_target*>(entry.data() + copy->target_offset);
      clear_name_tail(t->u.user.name);
      out += entry;
      // Jumps are offsets into the table blob; name the target too.
      const char* target = api.get_target(e, h.get());
      out.append("->").append(target ? target : "").append("\n");
    }
  }
  return {};
}

struct Ip4tc {
  decltype(&iptc_init) init = iptc_init;
  decltype(&iptc_free) free = iptc_free;
  decltype(&iptc_strerror) strerror = iptc_strerror;
  decltype(&iptc_first_chain) first_chain = iptc_first_chain;
  decltype(&iptc_next_chain) next_chain = iptc_next_chain;
  decltype(&iptc_builtin) builtin = iptc_builtin;
  decltype(&iptc_get_policy) get_policy = iptc_get_policy;
  decltype(&iptc_first_rule) first_rule = iptc_first_rule;
  decltype(&iptc_next_rule) next_rule = iptc_next_rule;
  decltype(&iptc_get_target) get_target = iptc_get_target;
};

struct Ip6tc {
  decltype(&ip6tc_init) init = ip6tc_init;
  decltype(&ip6tc_free) free = ip6tc_free;
  decltype(&ip6tc_strerror) strerror = ip6tc_strerror;
  decltype(&ip6tc_first_chain) first_chain = ip6tc_first_chain;
  decltype(&ip6tc_next_chain) next_chain = ip6tc_next_chain;
  decltype(&ip6tc_builtin) builtin = ip6tc_builtin;
  decltype(&ip6tc_get_policy) get_policy = ip6tc_get_policy;
  decltype(&ip6tc_first_rule) first_rule = ip6tc_first_rule;
  decltype(&ip6tc_next_rule) next_rule = ip6tc_next_rule;
  decltype(&ip6tc_get_target) get_target = ip6tc_get_target;
};

}  // namespace

Result<bool> xtables_legacy_in_use_here(IpFamily ip) {
  AMBIENT_ASSIGN_OR_RETURN(auto tables, xtables_legacy_tables(ip));
  return !tables.empty();
}

Result<std::string> xtables_legacy_fingerprint_here(IpFamily ip) {
  AMBIENT_ASSIGN_OR_RETURN(auto tables, xtables_legacy_tables(ip));
  std::string out;
  std::lock_guard lk(libiptc_mutex());
  for (const auto& table : tables) {
    auto r = ip == IpFamily::V6 ? append_xtables_table<ip6t_entry>(out, table, Ip6tc{})
                                : append_xtables_table<ipt_entry>(out, table, Ip4tc{});
    AMBIENT_RETURN_IF_ERROR(r);
  }
  return out;
}

}  // namespace ambient::redirect
