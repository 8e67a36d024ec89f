#!/usr/bin/env bash
# Benchmark: `clusterkit backup etcd` to S3 (s3s-fs) vs `etcdctl snapshot save` (alone, and
# followed by an upload of the file with curl's SigV4), on an etcd filled to SIZE_MIB.
# Wall time, peak RSS and the tool's CPU time come from /usr/bin/time -v; etcd's and s3s-fs's CPU
# time during each measurement from /proc/PID/stat. Prints one row per measurement, then the
# medians. Results are appended to RESULTS.md by hand.
#
# Usage: bench/backup/run.sh [SIZE_MIB (default 1024)] [RUNS (default 3)]
#   BENCH_DIR=/path keeps etcd's data between runs; LOAD_ONLY=1 only fills etcd;
#   CK_FLAGS="--compression-level 1 --parts-in-flight 2" passes flags to clusterkit;
#   FILE_STORE=0 skips the clusterkit → file:// measurement;
#   DRAIN_BIN=…/examples/snapshot_drain also measures a drain-only Rust client per run
#   (DRAIN_MODES="etcd-client wide adaptive small" picks its HTTP/2 window settings).
# Needs: etcd + etcdctl 3.4, s3s-fs (CLUSTERKIT_S3S_FS or /var/cache/clusterkit/s3s/bin/s3s-fs),
# openssl, curl ≥ 7.75, /usr/bin/time, and a release build: cargo build --release.
set -euo pipefail

SIZE_MIB=${1:-1024}
RUNS=${2:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CK=${CLUSTERKIT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/clusterkit}
S3S=${CLUSTERKIT_S3S_FS:-/var/cache/clusterkit/s3s/bin/s3s-fs}
WORK=${BENCH_DIR:-$(mktemp -d /tmp/ck-bench-backup.XXXXXX)}
[ -n "${LOAD_ONLY:-}" ] || [ -x "$CK" ] || { echo "build first: cargo build --release ($CK missing)" >&2; exit 1; }
[ -x "$S3S" ] || { echo "s3s-fs missing: bash scripts/deps.sh" >&2; exit 1; }

. "$ROOT/bench/backup/lib.sh"
trap stop_pids EXIT

cd "$WORK"
bench_pki   # both tools use the same client certificate
start_etcd
start_s3s

fill_etcd "$SIZE_MIB"
"${CTL[@]}" endpoint status -w table >&2
[ -z "${LOAD_ONLY:-}" ] || exit 0   # LOAD_ONLY=1 BENCH_DIR=…: fill etcd now, measure later

TICK=$(getconf CLK_TCK)
cpu_of() { awk -v t="$TICK" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
ROWS=$WORK/rows.tsv; : >"$ROWS"
measure() { # label, command…  → one table row; also appended to rows.tsv for the medians
  local label=$1; shift
  local e0 s0 e1 s1
  e0=$(cpu_of "$ETCD_PID"); s0=$(cpu_of "$S3S_PID")
  /usr/bin/time -v "$@" >/dev/null 2>time.txt || { cat time.txt >&2; exit 1; }
  e1=$(cpu_of "$ETCD_PID"); s1=$(cpu_of "$S3S_PID")
  python3 - "$label" "$e0" "$e1" "$s0" "$s1" "$ROWS" <<'PY'
import re, sys
label, e0, e1, s0, s1, rows = sys.argv[1:]
t = open("time.txt").read()
def field(name):
    return re.search(re.escape(name) + r": (.*)", t).group(1).strip()
parts = [float(x) for x in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
wall = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
rss = int(field("Maximum resident set size (kbytes)")) / 1024
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
etcd, s3s = float(e1) - float(e0), float(s1) - float(s0)
load = open("/proc/loadavg").read().split()[0]
print(f"| {label} | {wall:.2f} | {rss:.0f} | {cpu:.2f} | {etcd:.2f} | {s3s:.2f} | {load} |")
open(rows, "a").write(f"{label.split(' (run')[0].strip()}\t{wall}\t{rss}\t{cpu}\t{etcd}\t{s3s}\t{load}\n")
PY
}

echo "| what | wall s | peak RSS MiB | CPU s (tool) | CPU s (etcd) | CPU s (s3s-fs) | load1 |"
echo "|---|---|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
  rm -f snap.db
  # Alternate which tool goes first, so neither always meets a colder or a busier machine.
  if [ $((run % 2)) = 1 ]; then ORDER="etcdctl clusterkit"; else ORDER="clusterkit etcdctl"; fi
  for tool in $ORDER; do
    case $tool in
    etcdctl)
      measure "etcdctl snapshot save (run $run)" "${CTL[@]}" snapshot save snap.db
      measure "  + curl upload of the file (run $run)" curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
        --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -T snap.db "http://127.0.0.1:$SP/bench/etcdctl/snap-$run.db"
      rm -f snap.db s3/bench/etcdctl/snap-$run.db ;;   # disk: keep no copies between runs
    clusterkit)
      rm -rf s3/bench/ck   # disk: only the last run's backup stays (listed at the end)
      measure "clusterkit backup etcd → S3 (run $run)" "$CK" -v backup etcd --store s3://bench/ck \
        --endpoints $EP --cacert pki/ca.crt --cert pki/client.crt --key pki/client.key ${CK_FLAGS:-}
      # Where the encoder thread's time went (logged by the write pipeline at -v).
      sed -n 's/\x1b\[[0-9;]*m//g; s/.*write pipeline stages *//p' time.txt >&2 || true
      cp time.txt "clusterkit-run-$run.log"
      # The same to a local directory: no S3 server sharing this machine's CPU and disk, the
      # closest to etcdctl's own work (a file on local disk) — FILE_STORE=0 skips it.
      if [ "${FILE_STORE:-1}" = 1 ]; then
        rm -rf file-store
        measure "clusterkit backup etcd → file:// (run $run)" "$CK" -v backup etcd --store "file://$WORK/file-store" \
          --endpoints $EP --cacert pki/ca.crt --cert pki/client.crt --key pki/client.key ${CK_FLAGS:-}
        sed -n 's/\x1b\[[0-9;]*m//g; s/.*write pipeline stages *//p' time.txt >&2 || true
      fi ;;
    esac
  done
  # Optional: how fast etcd hands the snapshot to a Rust client that only drains it
  # (DRAIN_BIN=…/examples/snapshot_drain; DRAIN_MODES="etcd-client wide").
  if [ -n "${DRAIN_BIN:-}" ]; then
    for mode in ${DRAIN_MODES:-etcd-client wide}; do
      measure "drain only, $mode (run $run)" "$DRAIN_BIN" $EP pki/ca.crt pki/client.crt pki/client.key "$mode"
    done
  fi
done
echo
echo "Medians over $RUNS runs:"
python3 - "$ROWS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, *vals = line.rstrip("\n").split("\t")
    rows.setdefault(label, []).append([float(v) for v in vals])
print("| what | runs | wall s | peak RSS MiB | CPU s (tool) | CPU s (etcd) | CPU s (s3s-fs) | load1 |")
print("|---|---|---|---|---|---|---|---|")
for label, vals in rows.items():
    med = [statistics.median(c) for c in zip(*vals)]
    print(f"| {label} | {len(vals)} | {med[0]:.2f} | {med[1]:.0f} | {med[2]:.2f} | {med[3]:.2f} | {med[4]:.2f} | {med[5]:.1f} |")
PY
"$CK" backup list --store s3://bench/ck >&2
echo "work dir: $WORK (delete when done)" >&2
