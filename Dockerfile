# syntax=docker/dockerfile:1
# The istio-cni node image: ambient-agent as the entrypoint, and the istio-cni
# plugin at /opt/cni/bin/istio-cni, the fixed source dir the installer copies
# the plugin from onto the host (docs/installer.md#binary).
#
#   docker build -t ambient-cni .
#
# Both stages only run repository scripts, so that CI, which has no container
# engine, can test them as they are (test/image/image_test.sh):
#   - scripts/install-deps --build-only and scripts/image-build-stage.sh are the
#     build stage, word for word;
#   - scripts/runtime-packages.txt is the one list of run-time packages, read
#     here and by scripts/install-deps.

# --- build: compile the two shipped binaries -----------------------------------
# Full Debian, same release as the runtime stage, so the agent is linked
# against exactly the library versions (sonames) the runtime stage installs.
FROM debian:bookworm AS build
WORKDIR /src
# Dependencies first, from the files they depend on only: editing the sources
# does not throw away the apt layer.
COPY scripts/install-deps scripts/runtime-packages.txt scripts/
RUN scripts/install-deps --build-only && rm -rf /var/lib/apt/lists/*
COPY . .
# Release build in its own build dir, only istio-cni, ambient-agent and ambientctl
# (no test tools, no Go), stripped, into /out.
RUN scripts/image-build-stage.sh /out

# --- runtime -------------------------------------------------------------------
# Slim: the agent needs shared libraries and three netfilter tools, no
# toolchain. Same Debian release as the build stage (see above).
FROM debian:bookworm-slim
# Exactly the packages in scripts/runtime-packages.txt ('#' starts a comment):
# the libraries the agent links, iptables/nftables/ipset which it executes,
# iproute2 for debugging. No recommends: nothing the list does not name.
COPY scripts/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && sed 's/#.*//' /tmp/runtime-packages.txt \
    | DEBIAN_FRONTEND=noninteractive xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt
COPY --from=build /out/ambient-agent /usr/local/bin/ambient-agent
# The debugging CLI (docs/ambientctl.md): kubectl exec ... -- ambientctl pods
COPY --from=build /out/ambientctl /usr/local/bin/ambientctl
# The plugin is not run in the image: the installer copies this file to the
# host's /opt/cni/bin. It must be the only file there (the installer copies
# every regular file in /opt/cni/bin), and it needs only glibc, so it runs on
# any host.
COPY --from=build /out/istio-cni /opt/cni/bin/istio-cni
# Root: the agent enters pod network namespaces, writes netfilter rules and
# host files (CAP_SYS_ADMIN, CAP_NET_ADMIN; the chart grants them).
USER 0
ENTRYPOINT ["/usr/local/bin/ambient-agent"]
