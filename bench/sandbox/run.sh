#!/usr/bin/env bash
# Times `clusterkit sandbox up --nodes 3` cold (base rootfs not cached: debootstrap runs into a
# fresh CLUSTERKIT_CACHE) and warm (cached base), and `sandbox down`. Prints a Markdown table.
# Needs root, network access to deb.debian.org for the cold run, and scripts/deps.sh done.
#
#   bash bench/sandbox/run.sh              # 1 cold run + 3 warm runs
#   RUNS=5 COLD=0 bash bench/sandbox/run.sh  # warm runs only
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "bench/sandbox/run.sh must run as root" >&2; exit 1; }
. scripts/env.sh
RUNS=${RUNS:-3}
COLD=${COLD:-1}
NODES=${NODES:-3}
NAME=${NAME:-ckbench}
cargo build -q
ck=$PWD/target/debug/clusterkit

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); if (NR % 2) print v[m]; else printf "%.2f\n", (v[m] + v[m + 1]) / 2 }'; }

cold_cache=""
cleanup() {
  "$ck" sandbox down --name "$NAME" >/dev/null 2>&1 || true
  [ -n "$cold_cache" ] && rm -rf "$cold_cache"
}
trap cleanup EXIT
"$ck" sandbox down --name "$NAME" >/dev/null 2>&1 || true

echo "| run | sandbox up --nodes $NODES (s) | sandbox down (s) |"
echo "|---|---|---|"
if [ "$COLD" = 1 ]; then
  cold_cache=$(mktemp -d /var/tmp/clusterkit-bench-cache.XXXXXX)
  t0=$(now); CLUSTERKIT_CACHE=$cold_cache "$ck" sandbox up --name "$NAME" --nodes "$NODES" >/dev/null 2>&1; t1=$(now)
  CLUSTERKIT_CACHE=$cold_cache "$ck" sandbox down --name "$NAME" >/dev/null 2>&1; t2=$(now)
  echo "| cold (debootstrap + boot) | $(elapsed "$t0" "$t1") | $(elapsed "$t1" "$t2") |"
  rm -rf "$cold_cache"; cold_cache=""
fi
"$ck" sandbox base >/dev/null 2>&1   # the default cache, so warm runs are warm
ups=(); downs=()
for i in $(seq "$RUNS"); do
  t0=$(now); "$ck" sandbox up --name "$NAME" --nodes "$NODES" >/dev/null 2>&1; t1=$(now)
  "$ck" sandbox down --name "$NAME" >/dev/null 2>&1; t2=$(now)
  ups+=("$(elapsed "$t0" "$t1")"); downs+=("$(elapsed "$t1" "$t2")")
  echo "| warm $i | ${ups[-1]} | ${downs[-1]} |"
done
echo "| warm median of $RUNS | $(printf '%s\n' "${ups[@]}" | median) | $(printf '%s\n' "${downs[@]}" | median) |"
