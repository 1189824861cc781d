#!/usr/bin/env bash
# The application evaluation (issue 11): builds habitd, then runs tests/eval_apps.rs, which
# builds (or reuses) the application images from this machine's Debian packages, learns them
# with the default false-alarm rate, lives their benign life and injects the attack catalogue.
#
#   scripts/eval-apps.sh [smoke|full] [--report-only]
#
# smoke (default): redis, 4 benign steps, 8 techniques, about 4 minutes here.
# full: nginx + Python backend, redis, postgres; every benign step; the whole catalogue
#       (34 techniques, about 120 technique×application runs), about 35 minutes.
# --report-only: write the report without failing on missed targets (HABITD_EVAL_ASSERT=0).
# The report: target/eval_apps.md (tables), target/eval_apps.json, target/eval_apps.alerts.jsonl,
# the applications' events (target/eval_apps.events.jsonl: --print-events is streamed to disk,
# never held in memory), habitd's log and last metrics (eval_apps.habitd.log, .metrics.txt).
# HABITD_EVAL_IMAGE_PREFIX=NAME names the images NAME/APP:HASH (default habitd-eval), so that two
# evaluations on one machine do not learn each other's containers under one workload key.
# While iterating on one finding: HABITD_EVAL_APPS=nginx,postgres (nginx brings its backend),
# HABITD_EVAL_TECHNIQUES=nsenter,timestomp, HABITD_EVAL_STEPS="restart,log rotation".
# Run as root; installs the packages the images are made of when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-smoke}
[ "${2:-}" = "--report-only" ] && export HABITD_EVAL_ASSERT=0

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/eval-apps.sh: run as root (eBPF probes, containers)" >&2
  exit 1
fi
need=()
for p in busybox-static nginx redis-server redis-tools postgresql-15 postgresql-client-15 python3.11 docker.io gcc libc6-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd"
  (dockerd >/tmp/habitd-eval-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
cargo build --workspace
status=0
HABITD_EVAL=$mode cargo test --test eval_apps -- --ignored --nocapture || status=$?
echo "== report: target/eval_apps.md"
exit $status
