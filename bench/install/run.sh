#!/usr/bin/env bash
# Benchmark: `clusterkit install --phase prepare` + `--phase runtime` on 1, 3 and 6 sandbox
# nodes, cold (fresh nodes, packages from the offline bundle) and idempotent rerun.
# Reports wall time and remote commands issued (summed from the summary's per-host
# `commands`, the engine's count of remote round trips: commands, uploads, downloads).
# Usage (root, after scripts/deps.sh): bash bench/install/run.sh [NODES...]   (default 1 3 6)
# Prints a markdown table; paste it into bench/install/RESULTS.md with the date and machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh
CK=${CK:-./target/release/clusterkit}
[ -x "$CK" ] || cargo build --release -q
SIZES=("$@"); [ ${#SIZES[@]} -gt 0 ] || SIZES=(1 3 6)
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
$CK bundle build --out "$WORK/bundle" >/dev/null

now() { date +%s.%N; }
# Runs both phases; prints "seconds commands changed".
install_both() {
  local cfg=$1 start end cmds=0 changed=0 out
  start=$(now)
  for phase in prepare runtime; do
    out=$($CK -f "$cfg" -o json install --phase "$phase" 2>"$WORK/stderr") || { cat "$WORK/stderr" >&2; exit 1; }
    cmds=$((cmds + $(echo "$out" | python3 -c 'import json,sys; print(sum(h["commands"] for h in json.load(sys.stdin)["hosts"].values()))')))
    changed=$((changed + $(echo "$out" | python3 -c 'import json,sys; print(sum(h["changed"] for h in json.load(sys.stdin)["hosts"].values()))')))
  done
  end=$(now)
  echo "$(python3 -c "print(f'{$end-$start:.2f}')") $cmds $changed"
}

echo "| nodes | cold wall (s) | cold commands | rerun wall (s) | rerun commands | rerun changed |"
echo "|---|---|---|---|---|---|"
for n in "${SIZES[@]}"; do
  name="bin$n"
  cfg=$($CK sandbox up --name "$name" --nodes "$n" | tail -n 1)
  trap '$CK sandbox down --name '"$name"' >/dev/null 2>&1; rm -rf "$WORK"' EXIT
  dir=$(dirname "$cfg")
  { cat "$cfg"; echo "packages: { bundle: $WORK/bundle }"; } > "$dir/bench.yaml"
  read -r cold_s cold_c _ < <(install_both "$dir/bench.yaml")
  read -r warm_s warm_c warm_changed < <(install_both "$dir/bench.yaml")
  echo "| $n | $cold_s | $cold_c | $warm_s | $warm_c | $warm_changed |"
  $CK sandbox down --name "$name" >/dev/null
done
