// A kubeconfig as the plugin and the agent load it. It is read from a file
// (load_kubeconfig takes a path), here a memfd named through /proc.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "lib/k8s/kubeconfig.h"
#include "lib/unique_fd.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ambient::UniqueFd fd(::memfd_create("kubeconfig", MFD_CLOEXEC));
  if (!fd.valid()) std::abort();
  if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), data, size, 0) != ssize_t(size)) {
    std::abort();
  }
  (void)ambient::k8s::load_kubeconfig("/proc/self/fd/" + std::to_string(fd.get()));
  return 0;
}
