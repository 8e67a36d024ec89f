#!/usr/bin/env bash
# Benchmark: `clusterkit install --phase prepare` + `--phase runtime` on 1, 3 and 6 sandbox
# nodes, cold (fresh nodes, packages from the offline bundle) and idempotent rerun.
# Reports wall time, remote commands issued (summed from the summary's per-host `commands`,
# the engine's count of remote round trips: commands, uploads, downloads), the client's CPU
# time, the sandbox nodes' CPU time (see measure.py) and the load average.
# Usage (root, after scripts/deps.sh): bash bench/install/run.sh [NODES...]   (default 1 3 6)
# Env: CK=path/to/clusterkit (default: a release build in $CARGO_TARGET_DIR or ./target),
#      KEEP_EVENTS=DIR to keep the per-task event logs (--events) of every run.
# Prints a markdown table; paste it into bench/install/RESULTS.md with the date and machine.
set -euo pipefail
. "$(dirname "$0")/common.sh"

echo "| nodes | run | wall (s) | remote commands | changed | client CPU (s) | nodes CPU (s) | load avg |"
echo "|---|---|---|---|---|---|---|---|"
for n in "${SIZES[@]}"; do
  name="bin$n"
  cfg=$($CK sandbox up --name "$name" --nodes "$n" | tail -n 1)
  dir=$(dirname "$cfg")
  { cat "$cfg"; echo "packages: { bundle: $WORK/bundle }"; } > "$dir/bench.yaml"
  python3 bench/install/measure.py "$CK" "$dir/bench.yaml" "$EVENTS/n$n-cold" "$n" cold -- prepare runtime
  python3 bench/install/measure.py "$CK" "$dir/bench.yaml" "$EVENTS/n$n-rerun" "$n" rerun -- prepare runtime
  $CK sandbox down --name "$name" >/dev/null
  name=
done
