#!/usr/bin/env bash
# SSH benchmark: median time of one `exec` of `true` on an open clusterkit (russh) connection,
# versus `ssh host true` with the OpenSSH client (a new connection each time), and versus
# OpenSSH over a multiplexed master connection (ControlMaster) for an open-connection
# comparison. Runs against node1 of a 1-node sandbox it brings up and tears down.
#
#   bash bench/ssh/run.sh            # RUNS=50 by default; needs root (sandbox)
#   RUNS=200 bash bench/ssh/run.sh
#
# Environment: RUNS (default 50), NAME (sandbox name, default benchssh),
# CLUSTERKIT (the clusterkit binary; default target/debug/clusterkit, built if missing).
set -euo pipefail

RUNS=${RUNS:-50}
NAME=${NAME:-benchssh}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTERKIT=${CLUSTERKIT:-$ROOT/target/debug/clusterkit}
BENCH_TARGET=${BENCH_TARGET:-$ROOT/target/bench-ssh}

if [ ! -x "$CLUSTERKIT" ]; then
  (cd "$ROOT" && cargo build --bin clusterkit)
fi
# The driver is built in release mode, like a real deployment of clusterkit would be.
CARGO_TARGET_DIR=$BENCH_TARGET cargo build --release --quiet \
  --manifest-path "$ROOT/bench/ssh/Cargo.toml"
DRIVER=$BENCH_TARGET/release/clusterkit-bench-ssh

work=$(mktemp -d)
cleanup() {
  if [ -S "$work/cm" ]; then
    ssh -F /dev/null -o ControlPath="$work/cm" -O exit "root@${addr:-x}" 2>/dev/null || true
  fi
  "$CLUSTERKIT" sandbox down --name "$NAME" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

yaml=$("$CLUSTERKIT" sandbox up --name "$NAME" --nodes 1 | tail -n 1)
dir=$(dirname "$yaml")
addr=$(sed -n 's/^ *address: *//p' "$yaml" | head -n 1)
ssh_opts=(-F /dev/null -i "$dir/id_ed25519" -o UserKnownHostsFile="$dir/known_hosts"
          -o StrictHostKeyChecking=yes -o BatchMode=yes)

# Microseconds per run, one per line, into $1; uses bash's clock (no fork to time).
time_runs() {
  local out=$1; shift
  : > "$out"
  for _ in 1 2 3; do "$@" >/dev/null; done   # warm-up
  for ((i = 0; i < RUNS; i++)); do
    local t0=$EPOCHREALTIME
    "$@" >/dev/null
    local t1=$EPOCHREALTIME
    echo $(( (${t1/./} - ${t0/./}) )) >> "$out"
  done
}

stats() {  # file -> "median p90 min" in milliseconds
  sort -n "$1" | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
    p = v[int(NR * 0.9 + 0.5)];
    printf "%.2f %.2f %.2f", m / 1000, p / 1000, v[1] / 1000 }'
}

"$DRIVER" "$yaml" node1 "$RUNS" > "$work/clusterkit.txt"
time_runs "$work/openssh.txt" ssh "${ssh_opts[@]}" "root@$addr" true
ssh "${ssh_opts[@]}" -o ControlMaster=yes -o ControlPath="$work/cm" -o ControlPersist=yes -fN "root@$addr"
time_runs "$work/openssh-mux.txt" ssh "${ssh_opts[@]}" -o ControlPath="$work/cm" "root@$addr" true

echo "runs: $RUNS on node1 ($addr) of sandbox $NAME; $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-55s %10s %10s %10s\n' "what (ms)" median p90 min
printf '%-55s %10s %10s %10s\n' "clusterkit exec of true, open russh connection" $(stats "$work/clusterkit.txt")
printf '%-55s %10s %10s %10s\n' "ssh host true (OpenSSH, new connection each time)" $(stats "$work/openssh.txt")
printf '%-55s %10s %10s %10s\n' "ssh host true (OpenSSH, ControlMaster open)" $(stats "$work/openssh-mux.txt")
