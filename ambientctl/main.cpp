// ambientctl: the node agent's debugging CLI (docs/ambientctl.md).
#include <signal.h>

#include <cstdlib>
#include <exception>
#include <iostream>

#include "src/cli.h"

int main(int argc, char** argv) {
  // A reader that goes away (`ambientctl events -f | head`) ends us quietly.
  ::signal(SIGPIPE, SIG_DFL);
  try {
    const char* sock = std::getenv("AMBIENTCTL_SOCKET");
    ambient::ctl::Io io{std::cout, std::cerr, sock ? sock : ""};
    return ambient::ctl::run(std::vector<std::string>(argv + 1, argv + argc), io);
  } catch (const std::exception& e) {
    std::cerr << "ambientctl: fatal: " << e.what() << "\n";
    return ambient::ctl::kExitError;
  }
}
