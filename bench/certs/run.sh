#!/usr/bin/env bash
# Benchmark: `clusterkit certs rotate-ca --ca all` (the cluster CA, the front proxy's and
# etcd's, rotated together in three stages: trust both, reissue, drop the old) on 3 and 6
# sandbox nodes with the local API load balancer on (haproxy on every node). 6 nodes (any size
# of 6 or more) get three control-plane hosts, node1–node3 (control plane + etcd), node4–6
# workers; smaller sizes keep the sandbox's roles (node1 the control plane, etcd on the first
# three nodes).
# Reports the rotation's wall time in total and per stage (from the `-v` log's timestamps), and,
# from this machine every 0.25 s, each API server's /readyz and /readyz through admin.conf
# (the operator's endpoint): the longest not-ready window per API server, the number of windows,
# and any moment with no API server ready. After the rotation: every Node Ready, and every
# node's haproxy answering /readyz on 127.0.0.1:16443, with the backend state changes it logged
# during the rotation. Load average before and after.
# Usage (root, after scripts/deps.sh): bash bench/certs/run.sh [NODES...]   (default 3 6)
# Env: CK=path/to/clusterkit (default: a release build in $CARGO_TARGET_DIR or ./target),
#      CONTROL_PLANES=1|3 (default: 3 from 6 nodes on, else 1), LB=0 (no local load balancer),
#      KEEP=DIR (keep every run's logs, samples and reports there).
# Prints markdown; paste it into bench/certs/RESULTS.md with the date, the binary and the load.
set -euo pipefail
[ $# -gt 0 ] || set -- 3 6
cd "$(dirname "$0")/../.."
. scripts/env.sh
[ -n "${CLUSTERKIT_KUBE_BIN_DIR:-}" ] || { echo "CLUSTERKIT_KUBE_BIN_DIR unset: run scripts/deps.sh" >&2; exit 1; }
CK=${CK:-${CARGO_TARGET_DIR:-./target}/release/clusterkit}
[ -x "$CK" ] || cargo build --release -q
KUBECTL="$CLUSTERKIT_KUBE_BIN_DIR/kubectl"
WORK=$(mktemp -d)
name= poller=
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
cleanup() {
  [ -z "$poller" ] || { touch "$WORK/stop-poll"; wait "$poller" 2>/dev/null || true; }
  [ -z "$name" ] || $CK sandbox down --name "$name" >/dev/null 2>&1 || true
  [ -z "${KEEP:-}" ] || { mkdir -p "$KEEP"; cp -r "$WORK"/. "$KEEP"/; rm -rf "$KEEP/bundle"; }
  rm -rf "$WORK"
}
trap cleanup EXIT
# On each node after the rotation: /readyz six times through its load balancer (round-robin
# over the backends), whether haproxy runs, and what it logged since START (epoch seconds): its
# backends going DOWN or UP, none left, and reloads (haproxy logs each state change twice, with
# and without the `[WARNING]` prefix: the prefixed copy is kept).
# shellcheck disable=SC2016
POST='for i in 1 2 3 4 5 6; do c=$(printf "GET /readyz HTTP/1.0\r\n\r\n" | timeout 5 openssl s_client -quiet -connect 127.0.0.1:16443 2>/dev/null | head -n 1 | cut -d" " -f2); echo "lb ${c:-none}"; done; echo "haproxy $(systemctl is-active haproxy)"; journalctl -u haproxy --since @START --no-pager -o short-unix | grep -E "\[(WARNING|ALERT)\].*(is (UP|DOWN)|no server available)|Reloaded haproxy" || true'

echo "binary: $CK ($(stat -c %y "$CK" | cut -d. -f1)); $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
for n in "$@"; do
  name="rca$n"
  cps=${CONTROL_PLANES:-$([ "$n" -ge 6 ] && echo 3 || echo 1)}
  out="$WORK/n$n"; mkdir -p "$out"
  cfg=$($CK sandbox up --name "$name" --nodes "$n" | tail -n 1)
  dir=$(dirname "$cfg")
  # Once, after the first `sandbox up` (the bundle needs the base rootfs's dpkg status): the
  # default packages (containerd, runc, zstd, etcd-server, CNI plugins), haproxy for the local
  # load balancer, the Kubernetes binaries of $CLUSTERKIT_KUBE_BIN_DIR and the pause/busybox images.
  [ -d "$WORK/bundle" ] || $CK bundle build --package haproxy --out "$WORK/bundle" >/dev/null
  tail -n 1 "$cfg" | grep -q 'network: host-gw' || { echo "kubernetes is not the last section of $cfg" >&2; exit 1; }
  # node1..node$cps: control plane + etcd; the load balancer under `kubernetes:`, the bundle.
  awk -v cps="$cps" '
    /^  - name: node[0-9]+$/ { i = substr($3, 5) + 0 }
    /^    roles:/ && cps > 1 && i <= cps { print "    roles: [control-plane, etcd]"; next }
    { print }' "$cfg" > "$dir/bench.yaml"
  [ "${LB:-1}" = 0 ] || echo "  load_balancer: { local: true }" >> "$dir/bench.yaml"
  echo "packages: { bundle: $WORK/bundle }" >> "$dir/bench.yaml"
  cp "$dir/bench.yaml" "$out/cluster.yaml"
  admin="$dir/admin.conf"
  # API servers to poll: NAME=ADDR of every control-plane host.
  mapfile -t apis < <(awk '/^  - name: /{h=$3} /^    address: /{a=$2} /^    roles:.*control-plane/{print h "=" a}' "$dir/bench.yaml")

  echo
  echo "### $n nodes: ${#apis[@]} control-plane host(s) (${apis[*]}), local load balancer ${LB:-1}"
  echo
  t0=$(date +%s.%N)
  if ! $CK -f "$dir/bench.yaml" -o json install > "$out/install.json" 2> "$out/install.log"; then
    echo "**install failed** after $(since "$t0") s; its stderr (tail):"
    echo; echo '```'; tail -n 30 "$out/install.log"; echo '```'
    $CK sandbox down --name "$name" >/dev/null; name=
    continue
  fi
  echo "install (every phase, readiness report included): $(since "$t0") s"
  echo

  # The pollers, from a few seconds before the rotation to a few seconds after it.
  rm -f "$WORK/stop-poll"
  python3 bench/certs/poll.py "$out" 0.25 "$WORK/stop-poll" "$KUBECTL" "$admin" "${apis[@]}" &
  poller=$!
  sleep 3
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  start=$(date +%s.%N)
  rc=0
  $CK -f "$dir/bench.yaml" -v -o json certs rotate-ca --ca all > "$out/rotate.json" 2> "$out/rotate.log" || rc=$?
  end=$(date +%s.%N)
  load_after=$(cut -d' ' -f1-3 /proc/loadavg)
  sleep 3
  touch "$WORK/stop-poll"; wait "$poller"; poller=

  # Nodes Ready (waited for up to 60 s, the seconds it took recorded) and each node's haproxy.
  ready_after=-1
  for i in $(seq 0 60); do
    "$KUBECTL" --kubeconfig "$admin" --request-timeout=5s get nodes \
      -o 'jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
      > "$out/nodes.txt" 2>&1 || true
    if [ "$(grep -c ' True$' "$out/nodes.txt")" = "$n" ]; then ready_after=$i; break; fi
    sleep 1
  done
  if [ "${LB:-1}" != 0 ]; then
    $CK -f "$dir/bench.yaml" -o json exec -- "${POST//START/${start%.*}}" > "$out/post.json" 2>/dev/null || true
  fi
  echo "load average (1, 5, 15 min): $load_before before the rotation, $load_after after"
  echo
  # The summary's arguments, kept with the run's files (KEEP) to print it again later.
  echo "$start $end $rc $ready_after ${apis[*]}" > "$out/summary.args"
  python3 bench/certs/summary.py "$out" "$start" "$end" "$rc" "$ready_after" "${apis[@]}"
  $CK sandbox down --name "$name" >/dev/null
  name=
done
