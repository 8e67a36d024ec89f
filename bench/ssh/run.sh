#!/usr/bin/env bash
# SSH benchmark against node1 of a 1-node sandbox it brings up and tears down:
# 1. latency: median time of one `exec` of `true` on an open clusterkit (russh) connection,
#    versus `ssh host true` with the OpenSSH client (a new connection each time), and versus
#    OpenSSH over a multiplexed master connection (ControlMaster);
# 2. upload throughput of the same 100 MB file, side by side in rounds: OpenSSH `scp` (over the
#    open master connection, so no handshake is timed), clusterkit's `Executor::upload` (raw)
#    and `upload_shared` with zstd (compression timed too), for an incompressible file
#    (random bytes) and a Kubernetes binary (the first 100 MB of kube-apiserver).
#
#   bash bench/ssh/run.sh            # RUNS=50, ROUNDS=3; needs root (sandbox)
#   RUNS=200 ROUNDS=5 bash bench/ssh/run.sh
#
# Environment: RUNS (latency runs, default 50), ROUNDS (upload rounds, default 3), NAME (sandbox
# name, default benchssh), CLUSTERKIT (the binary for the sandbox; default
# $CARGO_TARGET_DIR/release/clusterkit). The driver is the workspace example `bench-ssh`, built
# in release mode into the same target directory.
set -euo pipefail

RUNS=${RUNS:-50}
ROUNDS=${ROUNDS:-3}
NAME=${NAME:-benchssh}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/scripts/env.sh"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CLUSTERKIT=${CLUSTERKIT:-$TARGET/release/clusterkit}
(cd "$ROOT" && cargo build --release --quiet --bin clusterkit --example bench-ssh)
DRIVER=$TARGET/release/examples/bench-ssh

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

load() { cut -d' ' -f1 /proc/loadavg; }

"$DRIVER" "$yaml" node1 exec "$RUNS" > "$work/clusterkit.txt"
time_runs "$work/openssh.txt" ssh "${ssh_opts[@]}" "root@$addr" true
ssh "${ssh_opts[@]}" -o ControlMaster=yes -o ControlPath="$work/cm" -o ControlPersist=yes -fN "root@$addr"
time_runs "$work/openssh-mux.txt" ssh "${ssh_opts[@]}" -o ControlPath="$work/cm" "root@$addr" true

echo "runs: $RUNS on node1 ($addr) of sandbox $NAME; $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); load $(load)"
printf '%-55s %10s %10s %10s\n' "what (ms)" median p90 min
printf '%-55s %10s %10s %10s\n' "clusterkit exec of true, open russh connection" $(stats "$work/clusterkit.txt")
printf '%-55s %10s %10s %10s\n' "ssh host true (OpenSSH, new connection each time)" $(stats "$work/openssh.txt")
printf '%-55s %10s %10s %10s\n' "ssh host true (OpenSSH, ControlMaster open)" $(stats "$work/openssh-mux.txt")

# Uploads: every round runs scp, raw and zstd back to back on the same file, into the node's
# disk-backed /var/tmp (its /tmp is a tmpfs). clusterkit's uploads also fsync the file and
# rename it into place; scp does neither.
head -c 100000000 /dev/urandom > "$work/random.bin"
head -c 100000000 "${CLUSTERKIT_KUBE_BIN_DIR:?run scripts/deps.sh}/kube-apiserver" > "$work/binary.bin"
ssh "${ssh_opts[@]}" -o ControlPath="$work/cm" "root@$addr" 'mkdir -p /var/tmp/ck-bench'
# The zstd uploads need zstd on the node, which install's runtime phase would bring: the
# Debian package of this machine's apt sources, installed as the bundle's would be.
(cd "$work" && apt-get download -q -o APT::Sandbox::User=root zstd >/dev/null)
scp -q "${ssh_opts[@]}" -o ControlPath="$work/cm" "$work"/zstd_*.deb "root@$addr:/var/tmp/ck-bench/"
ssh "${ssh_opts[@]}" -o ControlPath="$work/cm" "root@$addr" 'dpkg -i /var/tmp/ck-bench/zstd_*.deb >/dev/null && rm /var/tmp/ck-bench/zstd_*.deb'
echo
echo "upload of 100 MB to node1:/var/tmp/ck-bench, $ROUNDS rounds; MB/s = 10^6 bytes/s; load = 1-minute load average before each upload"
printf '%-10s %-5s %-36s %8s %8s %6s\n' file round what seconds "MB/s" load
for f in random binary; do
  # Untimed: a TCP connection's first hundred megabytes go slower (the receiver's buffers are
  # still growing; measured 2026-12-07: scp on a new connection ~0.40 s + handshake, on a used
  # one ~0.25 s), so scp's master connection carries the file once before it is timed, as the
  # "raw-warm" clusterkit connection does.
  scp -q "${ssh_opts[@]}" -o ControlPath="$work/cm" "$work/$f.bin" "root@$addr:/var/tmp/ck-bench/scp"
  for ((r = 1; r <= ROUNDS; r++)); do
    # Every timed upload starts with no dirty pages left by the previous one: clusterkit's
    # fsync would otherwise wait for the writeback of scp's (never synced) file as well.
    sync
    l=$(load); t0=$EPOCHREALTIME
    scp -q "${ssh_opts[@]}" -o ControlPath="$work/cm" "$work/$f.bin" "root@$addr:/var/tmp/ck-bench/scp"
    t1=$EPOCHREALTIME
    s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    printf '%-10s %-5s %-36s %8s %8.1f %6s\n' "$f" "$r" "scp (OpenSSH, open master)" "$s" "$(awk -v s="$s" 'BEGIN { print 100 / s }')" "$l"
    echo "$f scp $s" >> "$work/uploads.txt"
    for how in raw raw-warm zstd; do
      sync
      l=$(load)
      # raw-warm: the same raw upload, timed the second time on its connection (see main.rs).
      read -r s bytes < <("$DRIVER" "$yaml" node1 upload "$work/$f.bin" "/var/tmp/ck-bench/$how" ${how/raw-warm/raw warm})
      printf '%-10s %-5s %-36s %8s %8.1f %6s\n' "$f" "$r" "clusterkit upload ($how)" "$s" "$(awk -v s="$s" -v b="$bytes" 'BEGIN { print b / 1e6 / s }')" "$l"
      echo "$f $how $s" >> "$work/uploads.txt"
    done
  done
done
ssh "${ssh_opts[@]}" -o ControlPath="$work/cm" "root@$addr" 'rm -rf /var/tmp/ck-bench'
# Medians over the rounds, and each as a share of scp's throughput (the issue's goal: raw
# upload >= 0.8x scp).
echo
printf '%-10s %-6s %16s %12s\n' file how "median seconds" "x scp"
for f in random binary; do
  scp_median=$(awk -v f="$f" '$1 == f && $2 == "scp" { print $3 }' "$work/uploads.txt" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
  for how in scp raw raw-warm zstd; do
    m=$(awk -v f="$f" -v h="$how" '$1 == f && $2 == h { print $3 }' "$work/uploads.txt" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    printf '%-10s %-6s %16.3f %12.2f\n' "$f" "$how" "$m" "$(awk -v a="$scp_median" -v b="$m" 'BEGIN { print a / b }')"
  done
done
