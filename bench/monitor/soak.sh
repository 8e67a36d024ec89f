#!/usr/bin/env bash
# Memory of `clusterkit monitor serve` over time against a real installed cluster: VmRSS,
# VmHWM, RssAnon and RssFile once a minute (after 4 scrapes), then the largest VmRSS after the
# first minute and the last one.
#
#   bash scripts/demo.sh                       # a real 3-node sandbox cluster, if none is up
#   bench/monitor/soak.sh /var/lib/clusterkit/sandbox/demo/cluster.yaml [MINUTES=25] [SERIES=5000]
#
# Uses the release binary like run.sh (CLUSTERKIT_BIN overrides) and listens on
# 127.0.0.1:${PORT:-9843}, next to the demo's own exporter on 9842.
set -euo pipefail
CFG=${1:?usage: soak.sh CLUSTER_YAML [MINUTES] [SERIES]}
MINUTES=${2:-25}
SERIES=${3:-5000}
PORT=${PORT:-9843}
cd "$(dirname "$0")/../.."
. scripts/env.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${CLUSTERKIT_CACHE:-/var/cache/clusterkit}/target-release}
BIN=${CLUSTERKIT_BIN:-$CARGO_TARGET_DIR/release/clusterkit}
[ -x "$BIN" ] || cargo build --release --bin clusterkit
LOG=$(mktemp)
CFG=$(realpath "$CFG")
(cd "$(dirname "$CFG")" && exec env CLUSTERKIT_MONITOR_SYNTHETIC_SERIES="$SERIES" "$BIN" monitor serve -f "$CFG" --listen "127.0.0.1:$PORT") > "$LOG" 2>&1 &
PID=$!
# Scraped as Prometheus does: over TLS with its client certificate unless the cluster turns
# monitor.tls off.
NAME=$(sed -n 's/^name: *//p' "$CFG" | head -n 1)
MON="$(dirname "$CFG")/$NAME-state/pki/monitoring"
URL="https://127.0.0.1:$PORT/metrics"
SCRAPE=(curl -fsS --cacert "$MON/ca.crt" --cert "$MON/prometheus-client.crt" --key "$MON/prometheus-client.key")
if grep -Eq '^ +tls: *false' "$CFG"; then URL="http://127.0.0.1:$PORT/metrics"; SCRAPE=(curl -fsS); fi
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -f "$LOG"' EXIT
kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$PID/status"; }
mib() { awk -v v="$1" 'BEGIN { printf "%.2f", v / 1024 }'; }
echo "monitor serve pid $PID, $SERIES synthetic series, $MINUTES minutes"
max=0
for m in $(seq 1 "$MINUTES"); do
  sleep 60
  kill -0 "$PID" 2>/dev/null || { echo "monitor serve exited:"; cat "$LOG"; exit 1; }
  for _ in 1 2 3 4; do "${SCRAPE[@]}" -o /dev/null "$URL"; done
  rss=$(kib VmRSS)
  [ "$m" -gt 1 ] && [ "$rss" -gt "$max" ] && max=$rss
  echo "minute $m: VmRSS $(mib "$rss") MiB, VmHWM $(mib "$(kib VmHWM)"), RssAnon $(mib "$(kib RssAnon)"), RssFile $(mib "$(kib RssFile)")"
done
echo "largest VmRSS after minute 1: $(mib "$max") MiB; last: $(mib "$rss") MiB; series: $("${SCRAPE[@]}" "$URL" | grep -vc '^#')"
