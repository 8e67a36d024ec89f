#!/usr/bin/env bash
# Namespace backup/restore benchmark: N small ConfigMaps in one namespace on a real
# kube-apiserver v1.20.2 (+ controller-manager) over a local TLS etcd, then
#   clusterkit backup namespace bulk            (release build, to a file:// store)
#   clusterkit restore namespace ID --namespace-mapping bulk:bulk-restored
# each under /usr/bin/time -v: wall time, objects/s, peak RSS. Prints one Markdown table row
# per step; copy them into RESULTS.md.
#
# Usage: bench/namespace/run.sh [N ...]      (default: 10000 50000)
# Needs: CLUSTERKIT_KUBE_BIN_DIR (default /var/cache/clusterkit/kube-v1.20.2-r2/bin), etcd,
# openssl, /usr/bin/time. Everything runs on loopback in a temp dir and is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KUBE_BIN=${CLUSTERKIT_KUBE_BIN_DIR:-/var/cache/clusterkit/kube-v1.20.2-r2/bin}
ETCD=${CLUSTERKIT_ETCD:-/usr/bin/etcd}
COUNTS=("${@:-10000 50000}")
# shellcheck disable=SC2206
COUNTS=(${COUNTS[*]})
WORK=$(mktemp -d /tmp/ck-ns-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '[bench] %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

log "release build of clusterkit"
(cd "$ROOT" && cargo build --release --bin clusterkit >&2)
CK="$ROOT/target/release/clusterkit"

# --- PKI (EC P-256) -----------------------------------------------------------------------
P="$WORK/pki"; mkdir -p "$P"; cd "$P"
key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -days 2 -subj /CN=bench-ca -out ca.crt 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
printf 'extendedKeyUsage=clientAuth\n' >admin.ext
for n in server admin; do
  key $n.key
  subj=/CN=kube-apiserver; [ $n = admin ] && subj=/O=system:masters/CN=bench-admin
  openssl req -new -key $n.key -subj "$subj" -out $n.csr 2>/dev/null
  openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile $n.ext -out $n.crt 2>/dev/null
done
key sa.key; openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null

# --- etcd, kube-apiserver, kube-controller-manager --------------------------------------------
EP=$(free_port); PP=$(free_port); AP=$(free_port)
"$ETCD" --name bench --data-dir "$WORK/etcd" \
  --listen-client-urls "https://127.0.0.1:$EP" --advertise-client-urls "https://127.0.0.1:$EP" \
  --listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
  --initial-cluster "bench=http://127.0.0.1:$PP" --cert-file "$P/server.crt" --key-file "$P/server.key" \
  --trusted-ca-file "$P/ca.crt" --client-cert-auth --quota-backend-bytes 8589934592 \
  >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
sleep 2
"$KUBE_BIN/kube-apiserver" --etcd-servers "https://127.0.0.1:$EP" --etcd-cafile "$P/ca.crt" \
  --etcd-certfile "$P/server.crt" --etcd-keyfile "$P/server.key" --bind-address 127.0.0.1 \
  --advertise-address 127.0.0.1 --secure-port "$AP" --insecure-port 0 --cert-dir "$WORK/certs" \
  --tls-cert-file "$P/server.crt" --tls-private-key-file "$P/server.key" --client-ca-file "$P/ca.crt" \
  --service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range 10.0.0.0/24 --authorization-mode RBAC --enable-priority-and-fairness=false \
  --max-requests-inflight 1000 --max-mutating-requests-inflight 500 >"$WORK/apiserver.log" 2>&1 &
PIDS+=($!)
KC="$WORK/admin.conf"
cat >"$KC" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: b, cluster: {server: "https://127.0.0.1:$AP", certificate-authority: "$P/ca.crt"}}]
users: [{name: a, user: {client-certificate: "$P/admin.crt", client-key: "$P/admin.key"}}]
contexts: [{name: b, context: {cluster: b, user: a}}]
current-context: b
EOF
KCTL=("$KUBE_BIN/kubectl" --kubeconfig "$KC")
for _ in $(seq 1 120); do "${KCTL[@]}" get --raw /readyz >/dev/null 2>&1 && break; sleep 0.5; done
"$KUBE_BIN/kube-controller-manager" --kubeconfig "$KC" --bind-address 127.0.0.1 --secure-port 0 --port 0 \
  --leader-elect=false --service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" \
  --kube-api-qps 500 --kube-api-burst 1000 >"$WORK/cm.log" 2>&1 &
PIDS+=($!)

# --- objects ---------------------------------------------------------------------------------
create() { # create N ConfigMaps in namespace bulk (total so far: $1 → $2)
  local from=$1 to=$2 batch=1000 i f
  for ((i = from; i < to; i += batch)); do
    f="$WORK/cms-$i.json"
    python3 - "$i" "$(( i + batch < to ? i + batch : to ))" >"$f" <<'PY'
import json, sys
a, b = int(sys.argv[1]), int(sys.argv[2])
items = [{"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": f"cm-{n:06d}", "namespace": "bulk", "labels": {"bench": "yes"}},
          "data": {"index": str(n), "payload": "x" * 64}} for n in range(a, b)]
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
PY
  done
  ls "$WORK"/cms-*.json | xargs -P 8 -n 1 "${KCTL[@]}" create -o name -f >/dev/null
  rm -f "$WORK"/cms-*.json
}

measure() { # label objects command...
  local label=$1 n=$2; shift 2
  /usr/bin/time -v -o "$WORK/time.txt" "$@" >"$WORK/out.txt" 2>"$WORK/err.txt" || {
    cat "$WORK/err.txt" >&2; exit 1; }
  local wall rss secs
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/time.txt")
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time.txt")
  secs=$(python3 -c "p='$wall'.split(':'); print(sum(float(x)*60**i for i,x in enumerate(reversed(p))))")
  printf '| %s | %d | %.1f s | %.0f | %.1f MiB |\n' "$label" "$n" "$secs" "$(python3 -c "print($n/$secs)")" \
    "$(python3 -c "print($rss/1024)")"
}

"${KCTL[@]}" create namespace bulk >/dev/null
have=0
echo "| step | objects | wall | objects/s | peak RSS |"
echo "|---|---|---|---|---|"
for n in "${COUNTS[@]}"; do
  log "creating ConfigMaps up to $n"
  create "$have" "$n"; have=$n
  total=$(( n + 1 ))  # + kube-root-ca.crt
  STORE="file://$WORK/store-$n"
  measure "backup namespace (file store)" "$total" "$CK" -f "$WORK/none.yaml" backup namespace bulk --kubeconfig "$KC" --store "$STORE"
  id=$(tail -n1 "$WORK/out.txt")
  measure "restore namespace (mapped)" "$total" "$CK" -f "$WORK/none.yaml" restore namespace "$id" --kubeconfig "$KC" --store "$STORE" \
    --namespace-mapping "bulk:bulk-r$n" --concurrency 32
  log "deleting the restored copy"
  "${KCTL[@]}" delete namespace "bulk-r$n" --wait=false >/dev/null
done
