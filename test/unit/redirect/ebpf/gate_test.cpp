// The eBPF feature gate's decision from the facts it gathers.
#include <catch2/catch.hpp>

#include "redirect/ebpf/gate.h"

using namespace ambient::redirect::ebpf;

TEST_CASE("kernel releases are read as major.minor", "[ebpf]") {
  CHECK(parse_kernel_release("6.18.44-fc-v1272") == KernelVersion{6, 18});
  CHECK(parse_kernel_release("6.5.0") == KernelVersion{6, 5});
  CHECK(parse_kernel_release("5.15") == KernelVersion{5, 15});
  CHECK(parse_kernel_release("6.10-rc1") == KernelVersion{6, 10});
  CHECK_FALSE(parse_kernel_release(""));
  CHECK_FALSE(parse_kernel_release("6"));
  CHECK_FALSE(parse_kernel_release("6."));
  CHECK_FALSE(parse_kernel_release("linux-6.1"));
}

TEST_CASE("the eBPF gate passes only with every fact in favour", "[ebpf]") {
  const GateFacts good{.kernel_release = "6.18.44", .btf = true};
  auto d = decide(good);
  CHECK(d.usable);
  CHECK_THAT(d.reason, Catch::Contains("6.18"));
  CHECK_THAT(d.reason, Catch::Contains("programs loaded"));

  SECTION("programs adopted from this boot's pins pass and say so") {
    GateFacts f = good;
    f.adopted = true;
    d = decide(f);
    CHECK(d.usable);
    CHECK_THAT(d.reason, Catch::Contains("adopted") && !Catch::Contains("loaded"));
  }

  SECTION("6.5 is the first kernel whose bpf_sk_assign takes reuseport sockets") {
    GateFacts f = good;
    f.kernel_release = "6.5.0";
    CHECK(decide(f).usable);
    f.kernel_release = "6.4.16";
    d = decide(f);
    CHECK_FALSE(d.usable);
    CHECK_THAT(d.reason,
               Catch::Contains("6.4") && Catch::Contains("6.5") && Catch::Contains("SO_REUSEPORT"));
    f.kernel_release = "5.15.0";
    CHECK_FALSE(decide(f).usable);
  }
  SECTION("an unreadable release is refused, not guessed") {
    GateFacts f = good;
    f.kernel_release = "weird";
    CHECK_FALSE(decide(f).usable);
  }
  SECTION("no BTF, a refused load, a failed attach: each says why") {
    GateFacts f = good;
    f.btf = false;
    CHECK_THAT(decide(f).reason, Catch::Contains("BTF"));
    f = good;
    f.load_error = "load the eBPF programs: Permission denied";
    CHECK_FALSE(decide(f).usable);
    CHECK_THAT(decide(f).reason, Catch::Contains("Permission denied"));
    f = good;
    f.attach_error = "attach a tc filter on lo ingress: Operation not supported";
    CHECK_FALSE(decide(f).usable);
    CHECK_THAT(decide(f).reason,
               Catch::Contains("attach failed") && Catch::Contains("Operation not supported"));
    f = good;
    f.pin_error = "/sys/fs/bpf is not a bpffs mount, so the pods' sk_lookup links cannot be pinned";
    CHECK_FALSE(decide(f).usable);
    CHECK_THAT(decide(f).reason, Catch::Contains("not a bpffs"));
  }
  SECTION("an old kernel is the reason even when the rest failed too") {
    GateFacts f{.kernel_release = "6.1.0", .btf = false, .load_error = "x"};
    CHECK_THAT(decide(f).reason, Catch::Contains("older than 6.5"));
  }
}
