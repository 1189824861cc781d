#!/usr/bin/env bash
# The project's test command (README, second command). Run as root on a Debian-like host:
# installs what the tests need when missing (clang, libbpf headers, Docker, containerd, a static
# busybox for the test images), starts dockerd if it is not running, checks formatting, lints, that the
# prebuilt probes object matches its sources, then runs every test: unit tests, and end-to-end
# tests with real eBPF probes, real containers, a real sled store and a real HTTP listener.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: run as root (the end-to-end tests load eBPF programs and start containers)" >&2
  exit 1
fi

need=()
command -v clang >/dev/null 2>&1 || need+=(clang llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
# The CRI tests start their own containerd (with its CRI plugin) from Debian's package.
command -v containerd >/dev/null 2>&1 || need+=(containerd)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
# The tests build small static helper programs for the test images (cc -static).
command -v cc >/dev/null 2>&1 || need+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd"
  (dockerd >/tmp/habitd-ci-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 /tmp/habitd-ci-dockerd.log; exit 1; }
fi

echo "== prebuilt probes object matches its sources"
bash .ci/check-prebuilt

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== build"
cargo build --workspace --all-targets

echo "== tests"
cargo test --workspace --no-fail-fast
