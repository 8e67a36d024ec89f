#!/usr/bin/env bash
# Scrape latency (p50/p99) and RSS of `clusterkit monitor serve` with ~5,000 synthetic series,
# next to a real single-member etcd with TLS (so the etcd, certificate, backup and control-plane
# collectors run for real). Release build. Usage: bench/monitor/run.sh [SCRAPES] [SERIES]
set -euo pipefail
cd "$(dirname "$0")/../.."
SCRAPES=${1:-2000}
SERIES=${2:-5000}
# Release build in the shared cache, never a target/ inside the repository.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${CLUSTERKIT_CACHE:-/var/cache/clusterkit}/target-release}
BIN=${CLUSTERKIT_BIN:-$CARGO_TARGET_DIR/release/clusterkit}
if [ -z "${CLUSTERKIT_EXPORTER_BIN:-}" ] && [ ! -x "$BIN" ]; then
  cargo build --release --bin clusterkit
fi
ETCD=${CLUSTERKIT_ETCD:-/usr/bin/etcd}

WORK=$(mktemp -d)
IP="127.89.$(( ($$ >> 8) & 255 )).$(( ($$ & 254) | 1 ))"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

PKI=$WORK/bench-state/pki
mkdir -p "$PKI/etcd"
ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PKI/$1.key" -out "$PKI/$1.crt" -subj "/CN=$2" -days 3650 2>/dev/null; }
leaf() { # ca name cn san
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n%s\n' "${4:+subjectAltName=$4}" > "$WORK/ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PKI/$2.key" -out "$WORK/csr" -subj "/CN=$3" 2>/dev/null
  openssl x509 -req -in "$WORK/csr" -CA "$PKI/$1.crt" -CAkey "$PKI/$1.key" -CAcreateserial -out "$PKI/$2.crt" -days 365 -extfile "$WORK/ext" 2>/dev/null
}
ca ca kubernetes; ca etcd/ca etcd-ca
leaf etcd/ca etcd/server etcd-server "IP:$IP"
leaf etcd/ca etcd/metrics-client clusterkit-etcd-metrics
leaf ca apiserver-kubelet-client kube-apiserver-kubelet-client

"$ETCD" --name b1 --data-dir "$WORK/etcd" \
  --listen-client-urls "https://$IP:2379" --advertise-client-urls "https://$IP:2379" \
  --listen-peer-urls "http://$IP:2380" --initial-advertise-peer-urls "http://$IP:2380" \
  --initial-cluster "b1=http://$IP:2380" --cert-file "$PKI/etcd/server.crt" --key-file "$PKI/etcd/server.key" \
  --trusted-ca-file "$PKI/etcd/ca.crt" --client-cert-auth > "$WORK/etcd.log" 2>&1 &
PIDS+=($!)

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/cluster.yaml" <<YAML
name: bench
profile: sandbox
kubernetes: { version: v1.26.3 }
hosts:
  - { name: b1, address: $IP, roles: [control-plane, etcd], auth: { agent: true } }
backup: { store: "file://$WORK/backups" }
monitor:
  listen: "127.0.0.1:$PORT"
  # Plain HTTP, as the earlier results in RESULTS.md; the cost of TLS is measured by tls.sh.
  tls: false
  intervals: { etcd_secs: 5, control_plane_secs: 5, certificates_secs: 60, backups_secs: 30 }
YAML
mkdir -p "$WORK/backups"
CLUSTERKIT_MONITOR_SYNTHETIC_SERIES=$SERIES "$BIN" monitor serve -f "$WORK/cluster.yaml" > "$WORK/exporter.log" 2>&1 &
EXP=$!
PIDS+=($EXP)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/metrics" | grep -q clusterkit_synthetic_series && break; sleep 0.1; done
# SETTLE: seconds before scraping (default 6: every collector has run once; longer lets each
# rerun, which is the steady state for memory).
sleep "${SETTLE:-6}"
python3 bench/monitor/scrape.py 127.0.0.1 "$PORT" "$EXP" "$SCRAPES"
