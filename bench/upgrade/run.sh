#!/usr/bin/env bash
# Benchmark: `clusterkit upgrade apply --force-reroll` (Kubernetes v1.20.2 to itself: the one
# release these machines build) on 3 and 6 sandbox nodes with a 3-replica Deployment behind a
# Service and a PodDisruptionBudget minAvailable 2: the etcd backup, the control-plane host,
# then every node drained, restarted and uncordoned one at a time.
# Reports wall time in total and per host step, drain time, and how long the Deployment had
# fewer ready replicas than 3 (sampled every 0.5 s from this machine), with the load average.
# Usage (root, after scripts/deps.sh): bash bench/upgrade/run.sh [NODES...]   (default 3 6)
# Env: CK=path/to/clusterkit (default: a release build in $CARGO_TARGET_DIR or ./target).
# Prints markdown; paste it into bench/upgrade/RESULTS.md with the date, the binary and the load.
set -euo pipefail
[ $# -gt 0 ] || set -- 3 6
. "$(dirname "$0")/../install/common.sh"
KUBECTL="$CLUSTERKIT_KUBE_BIN_DIR/kubectl"

echo "binary: $CK ($(stat -c %y "$CK" | cut -d. -f1)); $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
for n in "${SIZES[@]}"; do
  name="upg$n"
  cfg=$($CK sandbox up --name "$name" --nodes "$n" | tail -n 1)
  dir=$(dirname "$cfg")
  { cat "$cfg"; echo "packages: { bundle: $WORK/bundle }"; echo "backup: { store: \"file://$WORK/store-$n\" }"; } > "$dir/bench.yaml"
  $CK -f "$dir/bench.yaml" install --no-readiness >/dev/null
  admin="$dir/admin.conf"
  "$KUBECTL" --kubeconfig "$admin" apply -f bench/upgrade/workload.yaml >/dev/null
  "$KUBECTL" --kubeconfig "$admin" rollout status deployment/web --timeout=180s >/dev/null
  # The watch: one line per sample, the ready replicas (empty when the API did not answer).
  ( while [ ! -e "$WORK/stop-watch" ]; do
      "$KUBECTL" --kubeconfig "$admin" --request-timeout=2s get deployment web \
        -o 'jsonpath={.status.readyReplicas}' 2>/dev/null || true; echo
      sleep 0.5
    done > "$WORK/watch-$n" ) &
  watch=$!
  load_before=$(cut -d' ' -f1 /proc/loadavg)
  start=$(date +%s.%N)
  $CK -f "$dir/bench.yaml" -o json upgrade apply --force-reroll > "$WORK/apply-$n.json" 2> "$WORK/apply-$n.log"
  end=$(date +%s.%N)
  touch "$WORK/stop-watch"; wait "$watch"; rm -f "$WORK/stop-watch"
  echo
  echo "### $n nodes (load average $load_before before, $(cut -d' ' -f1 /proc/loadavg) after)"
  echo
  python3 bench/upgrade/summary.py "$WORK/apply-$n.json" "$WORK/watch-$n" "$start" "$end"
  $CK sandbox down --name "$name" >/dev/null
  name=
done
