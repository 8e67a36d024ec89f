#!/usr/bin/env bash
# Benchmark: the whole `clusterkit install` (every phase, then the readiness report) on 1, 3
# and 6 sandbox nodes with Kubernetes v1.20.2 from the offline bundle, cold (fresh nodes) and
# the idempotent rerun, plus the ten slowest tasks of each run from `--events`.
# Usage (root, after scripts/deps.sh): bash bench/install/full.sh [NODES...]   (default 1 3 6)
# Env: CK=path/to/clusterkit (default: a release build in $CARGO_TARGET_DIR or ./target),
#      KEEP_EVENTS=DIR to keep the event logs, RERUNS (default 1) idempotent reruns per size,
#      MODE=static-pod for the static-pod control plane (default: the sandbox's systemd).
# Prints markdown; paste it into bench/install/RESULTS.md with the date, the binary and the load.
set -euo pipefail
. "$(dirname "$0")/common.sh"

MODE=${MODE:-systemd}
RERUNS=${RERUNS:-1}
echo "binary: $CK ($(stat -c %y "$CK" | cut -d. -f1)); $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); control_plane_mode: $MODE"
echo
echo "| nodes | run | wall (s) | remote commands | changed | client CPU (s) | nodes CPU (s) | load avg |"
echo "|---|---|---|---|---|---|---|---|"
tops=()
for n in "${SIZES[@]}"; do
  name="f$n$(($$ % 100000))"
  cfg=$($CK sandbox up --name "$name" --nodes "$n" | tail -n 1)
  dir=$(dirname "$cfg")
  { sed "s/control_plane_mode: systemd/control_plane_mode: $MODE/" "$cfg"; echo "packages: { bundle: $WORK/bundle }"; } > "$dir/bench.yaml"
  python3 bench/install/measure.py "$CK" "$dir/bench.yaml" "$EVENTS/full$n-cold" "$n" cold --
  tops+=("$n cold:$EVENTS/full$n-cold.jsonl")
  for ((r = 1; r <= RERUNS; r++)); do
    python3 bench/install/measure.py "$CK" "$dir/bench.yaml" "$EVENTS/full$n-rerun$r" "$n" rerun --
    tops+=("$n rerun $r:$EVENTS/full$n-rerun$r.jsonl")
  done
  $CK sandbox down --name "$name" >/dev/null
  name=
done
for t in "${tops[@]}"; do
  echo
  echo "Ten slowest tasks, ${t%%:*} node(s):"
  echo
  python3 bench/install/slowest.py "${t#*:}"
done
