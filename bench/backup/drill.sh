#!/usr/bin/env bash
# Benchmark: `clusterkit backup drill` of an etcd backup in S3 (download, verify, restore,
# start, count and marker checks), against `etcdctl snapshot restore` + start + the same count
# of the same snapshot already on local disk ("etcdctl alone"). One etcd 3.4 member with TLS is
# filled to SIZE_MIB (as run.sh does), backed up by clusterkit to a local s3s-fs, and the raw
# snapshot is that backup's object decompressed with zstd — the very bytes the drill restores.
#
# Each row: wall time; for clusterkit its own peak RSS (VmHWM, sampled: /usr/bin/time's figure
# includes its children, etcdctl and the scratch etcd) and the CPU of it and its children; the
# 1-minute load when the row ends. Runs alternate which goes first; medians at the end, and the
# drill's own per-step timings after each of its rows.
#
# Usage: bench/backup/drill.sh [SIZE_MIB (default 1024)] [RUNS (default 3)]
#   BENCH_DIR=/path keeps etcd's data and the backup between runs of the script.
# Needs: etcd + etcdctl 3.4, s3s-fs (CLUSTERKIT_S3S_FS or /var/cache/clusterkit/s3s/bin/s3s-fs),
# zstd, openssl, /usr/bin/time, a release build (CLUSTERKIT_BIN or
# $CARGO_TARGET_DIR/release/clusterkit), and about 4 × SIZE_MIB of free disk under the work dir.
set -euo pipefail

SIZE_MIB=${1:-1024}
RUNS=${2:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CK=${CLUSTERKIT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/clusterkit}
S3S=${CLUSTERKIT_S3S_FS:-/var/cache/clusterkit/s3s/bin/s3s-fs}
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/ck-bench-drill.XXXXXX)}
[ -x "$CK" ] || { echo "build first: cargo build --release ($CK missing)" >&2; exit 1; }
[ -x "$S3S" ] || { echo "s3s-fs missing: bash scripts/deps.sh" >&2; exit 1; }

. "$ROOT/bench/backup/lib.sh"
trap stop_pids EXIT

cd "$WORK"
bench_pki
# The live member: the drill must not touch it (its revision is checked at the end).
start_etcd
start_s3s
fill_etcd "$SIZE_MIB"
STORE=s3://bench/drill
ID=$("$CK" -o json backup list --store $STORE | python3 -c 'import json,sys; l=json.load(sys.stdin); print(l[-1]["id"] if l else "")')
if [ -z "$ID" ]; then
  ID=$("$CK" -o json backup etcd --store $STORE --endpoints $EP --cacert pki/ca.crt \
    --cert pki/client.crt --key pki/client.key | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
fi
# The raw snapshot of that very backup, for etcdctl alone.
[ -f snap.db ] || zstd -q -d -f "s3/bench/drill/backups/$ID/data" -o snap.db
"${CTL[@]}" endpoint status -w table >&2
REV0=$("${CTL[@]}" get "" --from-key --limit 1 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')

ROWS=$WORK/rows.tsv; : >"$ROWS"
row() { # label wall own_rss_kib cpu → a table row and a line for the medians
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  printf '| %s | %.2f | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$load"
  printf '%s\t%s\t%s\t%s\t%s\n' "${1% (run*}" "$2" "$3" "$4" "$load" >>"$ROWS"
}

drill() {
  run_sampled out.json time.txt "$CK" -o json backup drill "$ID" --store $STORE --work-dir "$WORK" ||
    { tail -40 time.txt >&2; cat out.json >&2; exit 1; }
  python3 - "$1" "$HWM" "$ROWS" <<'PY'
import json, re, sys
label, hwm, rows = sys.argv[1:]
t = open("time.txt").read()
def field(name):
    return re.search(re.escape(name) + r": (.*)", t).group(1).strip()
parts = [float(x) for x in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
wall = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
load = open("/proc/loadavg").read().split()[0]
r = json.load(open("out.json"))
assert r["ok"], r["verdict"]
print(f"| {label} | {wall:.2f} | {int(hwm) / 1024:.0f} | {cpu:.2f} | {load} |")
for s in r["steps"]:
    print(f"|   {s['name']} | {s['seconds']:.2f} | | | |")
print(f"|   (restore time reported: {r['restore_seconds']:.2f} s; key_count {r['figures'].get('key_count')}) | | | | |")
open(rows, "a").write(f"{label.split(' (run')[0]}\t{wall}\t{int(hwm) / 1024}\t{cpu}\t{load}\n")
PY
}

alone() { # etcdctl snapshot restore + etcd start (TLS) until it answers + the same count
  local t0 t1 c p pid
  rm -rf alone
  c=$(free_port); p=$(free_port)
  t0=$(date +%s.%N)
  etcdctl snapshot restore snap.db --data-dir alone --name alone \
    --initial-cluster alone=http://127.0.0.1:$p --initial-advertise-peer-urls http://127.0.0.1:$p \
    --initial-cluster-token bench-alone >/dev/null 2>&1
  etcd --name alone --data-dir alone --listen-client-urls https://127.0.0.1:$c \
    --advertise-client-urls https://127.0.0.1:$c --listen-peer-urls http://127.0.0.1:$p \
    --initial-advertise-peer-urls http://127.0.0.1:$p --initial-cluster alone=http://127.0.0.1:$p \
    --cert-file pki/server.crt --key-file pki/server.key --trusted-ca-file pki/ca.crt \
    --client-cert-auth --quota-backend-bytes 8589934592 >alone.log 2>&1 &
  pid=$!
  local A=(etcdctl --endpoints=https://127.0.0.1:$c --cacert=pki/ca.crt --cert=pki/client.crt --key=pki/client.key)
  until "${A[@]}" get "" --from-key --limit 1 -w json >alone-count.json 2>/dev/null; do sleep 0.1; done
  t1=$(date +%s.%N)
  kill $pid; wait $pid 2>/dev/null || true
  rm -rf alone
  row "$1" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')" "-" "-"
}

echo "| what | wall s | clusterkit peak RSS MiB (own) | CPU s (incl. children) | load1 |"
echo "|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
  if [ $((run % 2)) = 1 ]; then ORDER="alone drill"; else ORDER="drill alone"; fi
  for what in $ORDER; do
    case $what in
    alone) alone "etcdctl snapshot restore + start + count, local file (run $run)" ;;
    drill) drill "clusterkit backup drill from S3 (run $run)" ;;
    esac
  done
done
REV1=$("${CTL[@]}" get "" --from-key --limit 1 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
[ "$REV0" = "$REV1" ] || { echo "the live etcd moved from revision $REV0 to $REV1 during the drills" >&2; exit 1; }
echo
echo "Medians over $RUNS runs:"
python3 - "$ROWS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, *vals = line.rstrip("\n").split("\t")
    rows.setdefault(label, []).append(vals)
print("| what | runs | wall s | clusterkit peak RSS MiB (own) | load1 |")
print("|---|---|---|---|---|")
med = {}
for label, vals in rows.items():
    wall = statistics.median(float(v[0]) for v in vals)
    rss = [float(v[1]) for v in vals if v[1] != "-"]
    load = statistics.median(float(v[3]) for v in vals)
    med[label] = wall
    peak = f"{max(rss):.0f}" if rss else "-"
    print(f"| {label} | {len(vals)} | {wall:.2f} | {peak} | {load:.1f} |")
d = [w for l, w in med.items() if l.startswith("clusterkit")]
a = [w for l, w in med.items() if l.startswith("etcdctl")]
if d and a:
    print(f"\nclusterkit drill / etcdctl alone: {d[0] / a[0]:.2f}×")
PY
echo "work dir: $WORK (delete when done)" >&2
