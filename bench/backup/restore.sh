#!/usr/bin/env bash
# Benchmark: `clusterkit restore etcd ID` of a 3-member TLS etcd cluster filled to about
# SIZE_MIB, on a 3-node sandbox with the real `install --phase pki` and `--phase etcd` (the
# same flow as tests/restore_cluster.rs), from a file:// store on this machine.
# Measures (wall, peak RSS, CPU from /usr/bin/time -v, clusterkit's own VmHWM sampled): the backup of the loaded cluster, then
# RUNS restores (each one waits, inside clusterkit, for a healthy 3-member cluster), and checks
# after each restore that the 3 members are healthy with the snapshot's key count.
#
# Usage: bench/backup/restore.sh [SIZE_MIB (default 1024)] [RUNS (default 1)]
#   SIZE_MIB=0 loads SMALL_KEYS (default 3000) keys of 1 KiB instead of 1 MiB values;
#   CLUSTERKIT_BIN_BEFORE=… also restores with that build in every run (order alternating) and
#   labels the rows before/after; every restore's per-step timings (`-o json` steps: per member
#   or for the cluster) are printed after its row;
#   SANDBOX_NAME (default rbench); KEEP=1 leaves the sandbox up; SANDBOX_BIN=… runs the
#   untimed setup (sandbox up/down, bundle build, install phases) with another clusterkit
#   build (e.g. the current debug one); only backup and restore are timed, with CLUSTERKIT_BIN.
# Needs: root, systemd-nspawn + debootstrap (scripts/deps.sh), etcdctl 3.4, apt access for the
# etcd-server bundle, /usr/bin/time, a release build (CLUSTERKIT_BIN or
# $CARGO_TARGET_DIR/release/clusterkit), and about 5 × SIZE_MIB × 3 of free disk under /var.
set -euo pipefail

SIZE_MIB=${1:-1024}
RUNS=${2:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CK=${CLUSTERKIT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/clusterkit}
SB=${SANDBOX_BIN:-$CK}
NAME=${SANDBOX_NAME:-rbench}
ETCDCTL=${CLUSTERKIT_ETCDCTL:-/usr/bin/etcdctl}
WORK=$(mktemp -d /var/tmp/ck-bench-restore.XXXXXX)
[ -x "$CK" ] || { echo "build first: cargo build --release ($CK missing)" >&2; exit 1; }
export CLUSTERKIT_ETCDCTL=$ETCDCTL
. "$ROOT/bench/backup/lib.sh"

cleanup() {
  if [ -z "${KEEP:-}" ]; then "$SB" sandbox down --name "$NAME" >&2 || true; rm -rf "$WORK"; fi
}
trap cleanup EXIT

t0=$(date +%s)
CFG0=$("$SB" sandbox up --name "$NAME" --nodes 3 | tail -1)
DIR=$(dirname "$CFG0")
env -u CLUSTERKIT_KUBE_BIN_DIR "$SB" bundle build --no-images --package etcd-server --out "$WORK/bundle" >&2
CFG=$DIR/$NAME-bench.yaml
{ cat "$CFG0"; printf '\npackages: { bundle: %s }\n' "$WORK/bundle"; } >"$CFG"
for phase in pki etcd; do "$SB" -f "$CFG" install --phase $phase >&2; done
echo "sandbox + pki + etcd installed in $(( $(date +%s) - t0 )) s" >&2

PKI=$DIR/$NAME-state/pki/etcd
EPS=$(python3 -c 'import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
print(",".join("https://%s:2379" % h["address"] for h in c["hosts"] if "etcd" in h.get("roles", [])))' "$CFG")
CTL=("$ETCDCTL" --endpoints="$EPS" --cacert="$PKI/ca.crt" --cert="$PKI/healthcheck-client.crt"
     --key="$PKI/healthcheck-client.key" --dial-timeout=5s --command-timeout=60s)
export ETCDCTL_API=3
healthy() { # 3 healthy endpoints and 3 started members
  [ "$("${CTL[@]}" endpoint health 2>&1 | grep -c 'is healthy')" = 3 ] &&
  [ "$("${CTL[@]}" member list 2>/dev/null | grep -c ', started, ')" = 3 ]
}
for _ in $(seq 150); do healthy && break; sleep 2; done
healthy || { echo "etcd not healthy after install" >&2; exit 1; }

# --- loader: SIZE_MIB values of 1 MiB (lib.sh's fill_etcd, as run.sh), or with SIZE_MIB=0
# SMALL_KEYS keys of 1 KiB ---
if [ "$SIZE_MIB" = 0 ]; then
  t1=$(date +%s)
  seq 0 $((${SMALL_KEYS:-3000} - 1)) | xargs -P 8 -I{} sh -c \
    'head -c 768 /dev/urandom | base64 -w0 | "$@" put bench/key-{} >/dev/null' _ "${CTL[@]}"
  echo "loaded ${SMALL_KEYS:-3000} small keys in $(( $(date +%s) - t1 )) s" >&2
else
  fill_etcd "$SIZE_MIB"
fi
"${CTL[@]}" endpoint status -w table >&2
KEYS=$("${CTL[@]}" get bench/ --prefix --keys-only | grep -c .)

measure() { # label, command… → one table row (stdout of the command in out.txt)
  local label=$1; shift
  run_sampled out.txt time.txt "$@" || { tail -40 time.txt >&2; exit 1; }
  python3 - "$label" "$HWM" <<'PY'
import re, sys
t = open("time.txt").read()
def field(name):
    return re.search(re.escape(name) + r": (.*)", t).group(1).strip()
parts = [float(x) for x in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
wall = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
rss = int(field("Maximum resident set size (kbytes)")) / 1024
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
load = open("/proc/loadavg").read().split()[0]
own = int(sys.argv[2]) / 1024
print(f"| {sys.argv[1]} | {wall:.1f} | {own:.0f} | {rss:.0f} | {cpu:.1f} | {load} |")
PY
}

cd "$WORK"
STORE=file://$WORK/store
echo "| what | wall s | clusterkit peak RSS MiB | peak RSS incl. children MiB | CPU s (incl. children) | load1 |"
# (rows "  …: step" below a restore: that restore's own per-step timings, wall seconds)
echo "|---|---|---|---|---|---|"
measure "backup etcd (3 members, file://)" "$CK" -f "$CFG" -o json backup etcd --store "$STORE"
ID=$(python3 -c 'import json; print(json.load(open("out.txt"))["id"])')
steps() { # the per-step timings of the restore whose JSON report is in out.txt
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open("out.txt"))
for s in r.get("steps", []):
    print(f"|   {sys.argv[1]}: {s['step']} | {s.get('member', 'cluster')} | {s['seconds']:.2f} s |")
print(f"|   {sys.argv[1]}: total (inside clusterkit) | | {r.get('seconds', 0):.2f} s |")
PY
}
drop_aside() { # each restore keeps the old data dir aside on every node; drop them (disk)
  while read -r addr key kh; do
    ssh -n -i "$key" -o UserKnownHostsFile="$kh" -o StrictHostKeyChecking=yes -o BatchMode=yes \
      -o ConnectTimeout=10 "root@$addr" 'rm -rf /var/lib/etcd.before-*' >&2
  done < <(python3 -c 'import os, sys, yaml
d = os.path.dirname(sys.argv[1]); c = yaml.safe_load(open(sys.argv[1]))
for h in c["hosts"]:
    print(h["address"], os.path.join(d, h["auth"]["key_file"]), os.path.join(d, c["ssh"]["known_hosts"]))' "$CFG")
}
for run in $(seq "$RUNS"); do
  BUILDS="after"
  if [ -n "${CLUSTERKIT_BIN_BEFORE:-}" ]; then
    if [ $((run % 2)) = 1 ]; then BUILDS="before after"; else BUILDS="after before"; fi
  fi
  for build in $BUILDS; do
    bin=$CK; [ "$build" = before ] && bin=$CLUSTERKIT_BIN_BEFORE
    # Something written after the backup, which the restore must drop.
    "${CTL[@]}" put bench/after-backup x >/dev/null
    measure "restore etcd, 3 members, $build (run $run)" "$bin" -f "$CFG" -o json restore etcd "$ID" --store "$STORE" --yes
    cp out.txt "restore-$build-run-$run.json"
    steps "$build run $run"
    healthy || { echo "run $run ($build): cluster not healthy after the restore" >&2; exit 1; }
    got=$("${CTL[@]}" get bench/ --prefix --keys-only | grep -c .)
    [ "$got" = "$KEYS" ] || { echo "run $run ($build): $got keys after the restore, want $KEYS" >&2; exit 1; }
    drop_aside
  done
done
echo "snapshot: $("${CTL[@]}" endpoint status -w json | python3 -c 'import json,sys; print(max(e["Status"]["dbSize"] for e in json.load(sys.stdin)))') bytes DB, $KEYS keys" >&2
