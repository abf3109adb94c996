#!/usr/bin/env bash
# The agent's memory against a large fake cluster (issue 10): ClusterBuilder::large(10, 500,
# 1000) served by the `fake-kube` binary; one inventory listing (node-3's and the cluster's)
# by the `agent_bench` example; then `holdfast agent` as a daemon for node-3 (50 pods, 100
# PVCs: it first backs up its 90 filesystem volumes, empty, into a local repository, then
# idles), VmRSS/VmHWM sampled every 10 s. Run by hand, never by CI.
#
#   cargo build [--release] -p holdfast-cli -p holdfast-fake-kube
#   cargo build [--release] -p holdfast-agent --example agent_bench
#   benches/agent_idle.sh TARGET_PROFILE_DIR [SECONDS]   # e.g. $CARGO_TARGET_DIR/debug 300
#
# Prints the listing figures, then "t  VmRSS  VmHWM  backups-done" lines, and the agent's
# log lines that are not per-volume results at the end. Everything lives in a temporary
# directory, deleted on exit.
set -euo pipefail
BIN=${1:?target profile dir, e.g. target/release}
SECONDS_TOTAL=${2:-300}
W=$(mktemp -d)
FAKE_PID=
AGENT_PID=
cleanup() {
  [ -z "$AGENT_PID" ] || kill "$AGENT_PID" 2>/dev/null || true
  [ -z "$FAKE_PID" ] || kill "$FAKE_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

"$BIN/examples/agent_bench" seed "$W" node-3
printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: holdfast-system\n' >>"$W/seed.yaml"
"$BIN/fake-kube" --seed "$W/seed.yaml" --kubeconfig "$W/kubeconfig" >"$W/fake.log" 2>&1 &
FAKE_PID=$!
for _ in $(seq 100); do [ -s "$W/kubeconfig" ] && break; sleep 0.1; done
export KUBECONFIG=$W/kubeconfig

echo "== one listing (agent_bench list), peak memory of the whole process =="
echo "-- node-3's pods, every PVC, PV and namespace (what the agent lists each --once run):"
"$BIN/examples/agent_bench" list node-3
echo "-- every pod (what maintenance lists):"
"$BIN/examples/agent_bench" list

export HOLDFAST_PASSWORD=bench HOLDFAST_REPOSITORY=$W/repo
"$BIN/holdfast" init --kdf-memory-kib 8 --kdf-iterations 1 >/dev/null
NODE_NAME=node-3 "$BIN/holdfast" agent --kubelet-dir "$W/kubelet" --cluster-name bench \
  --lease-namespace holdfast-system --interval 5 >"$W/agent.log" 2>&1 &
AGENT_PID=$!

echo "== holdfast agent (daemon, node-3, --interval 5) =="
printf '%6s %12s %12s %8s\n' t VmRSS VmHWM backups
start=$(date +%s)
while :; do
  sleep 10
  t=$(($(date +%s) - start))
  if ! kill -0 "$AGENT_PID" 2>/dev/null; then
    echo "the agent exited:"; cat "$W/agent.log"; exit 1
  fi
  rss=$(awk '/^VmRSS/{print $2" "$3}' /proc/$AGENT_PID/status)
  hwm=$(awk '/^VmHWM/{print $2" "$3}' /proc/$AGENT_PID/status)
  done_n=$(grep -c 'files new' "$W/agent.log" || true)
  printf '%6s %12s %12s %8s\n' "$t" "$rss" "$hwm" "$done_n"
  [ "$t" -lt "$SECONDS_TOTAL" ] || break
done
echo "== agent log, without per-volume lines =="
grep -v "volume=" "$W/agent.log" | tail -20 || true
echo "== per-volume results =="
echo "succeeded: $(grep -c 'files new' "$W/agent.log" || true), skipped: $(grep -c 'skipped:' "$W/agent.log" || true), failed: $(grep -c 'backup failed' "$W/agent.log" || true)"
