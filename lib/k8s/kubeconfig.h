// kubeconfig files, read the same way by the plugin (its API fallback,
// statically linked) and the agent: current-context -> cluster + user.
#pragma once

#include <string>

#include "lib/result.h"

namespace ambient::k8s {

// A file's whole contents; empty when it cannot be read (the caller's next
// step, a TLS or token check, reports the problem with its own context).
std::string read_file(const std::string& path);

struct KubeConfig {
  std::string server;            // https://host:port
  std::string ca_file, ca_data;  // PEM
  std::string token, token_file;
  std::string client_cert_data, client_key_data;  // PEM
  bool insecure = false;
};

// Supports certificate-authority(-data), token, tokenFile and
// client-certificate/key(-data); file references are read at load time
// except tokenFile, which callers re-read so rotation keeps working.
Result<KubeConfig> load_kubeconfig(const std::string& path);

}  // namespace ambient::k8s
