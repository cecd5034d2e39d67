// BpfFs: a bpffs instance of the test's own, mounted on a fresh temp dir
// and unmounted (with every pin in it, which releases the pinned links)
// when the test ends. It stands in for the node's /sys/fs/bpf, where the
// eBPF backend pins each pod's sk_lookup link (docs/redirection.md#ebpf-time-wait);
// the machine's own bpffs, if it has one, is never touched.
#pragma once

#include <sys/mount.h>

#include <catch2/catch.hpp>
#include <string>

#include "support/temp_dir.h"

namespace ambient::test {

class BpfFs {
 public:
  BpfFs() { REQUIRE(::mount("bpf", dir_.path().c_str(), "bpf", 0, "mode=0700") == 0); }
  ~BpfFs() { ::umount2(dir_.path().c_str(), MNT_DETACH); }
  BpfFs(const BpfFs&) = delete;
  BpfFs& operator=(const BpfFs&) = delete;

  const std::string& path() const { return dir_.path(); }

 private:
  TempDir dir_{"amb-bpffs-"};
};

}  // namespace ambient::test
