#!/usr/bin/env bash
# Scrape cost of the secured stack: TLS with a client certificate (what Prometheus does with
# `monitor.tls`, the default) against plain HTTP, side by side in one run, for node-exporter
# (Debian's 1.5, with the generated --web.config.file) and `clusterkit monitor serve` (release
# build, SERIES synthetic series). Keep-alive connections, as Prometheus scrapes; the
# handshake is not counted. Usage: bench/monitor/tls.sh [SCRAPES=4000] [SERIES=5000] [ROUNDS=8]
set -euo pipefail
cd "$(dirname "$0")/../.."
SCRAPES=${1:-4000}
SERIES=${2:-5000}
ROUNDS=${3:-8}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${CLUSTERKIT_CACHE:-/var/cache/clusterkit}/target-release}
BIN=${CLUSTERKIT_BIN:-$CARGO_TARGET_DIR/release/clusterkit}
[ -x "$BIN" ] || cargo build --release --bin clusterkit
NODE_EXPORTER=${CLUSTERKIT_NODE_EXPORTER:-/usr/bin/prometheus-node-exporter}

WORK=$(mktemp -d)
IP="127.89.$(( ($$ >> 8) & 255 )).$(( ($$ & 254) | 1 ))"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Two clusters of one host each, the same but for monitor.tls.
P_TLS=$(port); P_PLAIN=$(port); N_TLS=$(port); N_PLAIN=$(port); M_TLS=$(port); M_PLAIN=$(port)
for kind in tls plain; do
  mkdir -p "$WORK/$kind"
  listen=$P_TLS; tls=true
  [ "$kind" = plain ] && { listen=$P_PLAIN; tls=false; }
  cat > "$WORK/$kind/cluster.yaml" <<YAML
name: bench
profile: sandbox   # the host is a loopback address, which only the sandbox profile allows
kubernetes: { version: v1.26.3 }
hosts:
  - { name: b1, address: $IP, roles: [control-plane, etcd], auth: { agent: true } }
monitor:
  listen: "127.0.0.1:$listen"
  tls: $tls
  alertmanager: { receivers: [ { name: none, webhook: { url: "http://127.0.0.1:9/" } } ] }
YAML
done
# The monitoring CA, its certificates and the web configs; b1's node-exporter pair goes next
# to the generated files, where web/node-exporter.yml looks for it.
"$BIN" monitor config -f "$WORK/tls/cluster.yaml" --dir "$WORK/gen" > /dev/null 2>&1
STATE=$WORK/tls/bench-state
cp "$STATE"/hosts/b1/pki/monitoring/node-exporter.{crt,key} "$WORK/gen/tls/"
CA=$STATE/pki/monitoring/ca.crt
CLIENT="$STATE/pki/monitoring/prometheus-client.crt,$STATE/pki/monitoring/prometheus-client.key"

"$NODE_EXPORTER" --web.listen-address="127.0.0.1:$N_PLAIN" > "$WORK/ne-plain.log" 2>&1 & PIDS+=($!)
"$NODE_EXPORTER" --web.listen-address="127.0.0.1:$N_TLS" --web.config.file="$WORK/gen/web/node-exporter.yml" \
  > "$WORK/ne-tls.log" 2>&1 & PIDS+=($!)
# The same with one cheap collector (meminfo): the collectors' own time and jitter (tens of
# ms on a busy machine) no longer hide what TLS adds.
ONE=(--collector.disable-defaults --collector.meminfo)
"$NODE_EXPORTER" "${ONE[@]}" --web.listen-address="127.0.0.1:$M_PLAIN" > "$WORK/nm-plain.log" 2>&1 & PIDS+=($!)
"$NODE_EXPORTER" "${ONE[@]}" --web.listen-address="127.0.0.1:$M_TLS" --web.config.file="$WORK/gen/web/node-exporter.yml" \
  > "$WORK/nm-tls.log" 2>&1 & PIDS+=($!)
for kind in tls plain; do
  CLUSTERKIT_MONITOR_SYNTHETIC_SERIES=$SERIES "$BIN" monitor serve -f "$WORK/$kind/cluster.yaml" \
    > "$WORK/exporter-$kind.log" 2>&1 & PIDS+=($!)
done
ca_args=(--cacert "$CA" --cert "${CLIENT%,*}" --key "${CLIENT#*,}")
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$P_PLAIN/metrics" | grep -q clusterkit_synthetic_series \
    && curl -sf "${ca_args[@]}" "https://127.0.0.1:$P_TLS/metrics" | grep -q clusterkit_synthetic_series \
    && curl -sf "http://127.0.0.1:$N_PLAIN/metrics" > /dev/null \
    && curl -sf "${ca_args[@]}" "https://127.0.0.1:$N_TLS/metrics" > /dev/null \
    && curl -sf "http://127.0.0.1:$M_PLAIN/metrics" > /dev/null \
    && curl -sf "${ca_args[@]}" "https://127.0.0.1:$M_TLS/metrics" > /dev/null && break
  sleep 0.2
done
sleep "${SETTLE:-6}"
echo "$(nproc) CPUs; $(uptime)" >&2
python3 bench/monitor/compare.py "$SCRAPES" "$ROUNDS" \
  "exporter-http=http://127.0.0.1:$P_PLAIN/metrics" \
  "exporter-https-mtls=https://127.0.0.1:$P_TLS/metrics,$CA,$CLIENT" \
  "node-exporter-http=http://127.0.0.1:$N_PLAIN/metrics" \
  "node-exporter-https-mtls=https://127.0.0.1:$N_TLS/metrics,$CA,$CLIENT" \
  "node-exporter-meminfo-http=http://127.0.0.1:$M_PLAIN/metrics" \
  "node-exporter-meminfo-https-mtls=https://127.0.0.1:$M_TLS/metrics,$CA,$CLIENT"
