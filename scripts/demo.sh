#!/usr/bin/env bash
# The main job on a local default: a sandbox of real nodes on this machine, then clusterkit
# against it — offline bundle, every install phase, an etcd backup, the exporter, and the
# secured monitoring stack (`monitor deploy`: node-exporter on every node, Prometheus and
# Alertmanager on the first; TLS with the cluster's monitoring CA everywhere, client
# certificates for the exporters, a login for Prometheus and Alertmanager). Installs what it
# needs first (as root, Debian 12).
# Leaves the sandbox and the exporter running and prints how to use them;
# `bash scripts/demo.sh down` stops the exporter (by its recorded PID) and removes the
# sandbox. Rerunning restarts the exporter.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-3}
NAME=${NAME:-demo}
EXPORTER_PORT=9842
step() { printf '\n== %s\n' "$*" >&2; }

# Stops the process whose PID is recorded in $1, if that PID still runs program $2 (PIDs get
# reused: never kill a stranger), waiting up to 60 s for it to exit; removes the record.
stop_recorded() {
  local pidfile=$1 program=$2 pid argv0
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  argv0=$(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | head -n 1 || true)
  if [ -n "$pid" ] && [ "$argv0" = "$program" ]; then
    echo "stopping $program (pid $pid)" >&2
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "pid $pid did not exit after 60 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

if [ "${1:-}" = down ]; then
  . scripts/env.sh
  ck=${CARGO_TARGET_DIR:-$CLUSTERKIT_CACHE/target}/debug/clusterkit
  dir=$("$ck" sandbox status --name "$NAME" -o json | grep -o '"dir": *"[^"]*"' | head -n 1 | cut -d'"' -f4 || true)
  if [ -n "$dir" ]; then
    stop_recorded "$dir/exporter.pid" "$ck"
  fi
  "$ck" sandbox down --name "$NAME"
  exit 0
fi

bash scripts/deps.sh
. scripts/env.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CLUSTERKIT_CACHE/target}
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}
cargo build -q
ck=$CARGO_TARGET_DIR/debug/clusterkit

step "sandbox: $NODES real nodes (systemd-nspawn + sshd)"
cluster_yaml=$($ck sandbox up --name "$NAME" --nodes "$NODES" | tail -n 1)
dir=$(dirname "$cluster_yaml")
echo "cluster description: $cluster_yaml"
# The exporter runs on this machine, on its address on the sandbox bridge (x.y.z.1), where
# Prometheus on node1 scrapes it.
subnet=$($ck sandbox status --name "$NAME" -o json | grep -o '"subnet": *"[^"]*"' | head -n 1 | cut -d'"' -f4)
EXPORTER_LISTEN="${subnet%.0/24}.1:$EXPORTER_PORT"

step "offline bundle (the nodes have no route to a mirror)"
$ck bundle build --out "$dir/bundle" --package prometheus-node-exporter \
  --package prometheus --package prometheus-alertmanager
grep -q '^packages:' "$cluster_yaml" || echo "packages: { bundle: ./bundle }" >> "$cluster_yaml"
grep -q '^backup:' "$cluster_yaml" || echo "backup: { store: file://./backups, retention: { keep_last: 7 } }" >> "$cluster_yaml"
# Alerts go to a webhook on the Alertmanager host's loopback, where nothing listens in the demo
# (point it at your chat bridge or pager in real life).
grep -q '^monitor:' "$cluster_yaml" || cat >> "$cluster_yaml" <<YAML
monitor:
  listen: "$EXPORTER_LISTEN"
  alertmanager:
    receivers: [ { name: local-webhook, webhook: { url: "http://127.0.0.1:9099/alerts" } } ]
    critical_receiver: local-webhook
    warning_receiver: local-webhook
YAML
$ck config validate -f "$cluster_yaml"

step "reach every host"
$ck ping -f "$cluster_yaml"

step "install: every phase, in order"
$ck install -f "$cluster_yaml"
kubectl=${CLUSTERKIT_KUBE_BIN_DIR:+$CLUSTERKIT_KUBE_BIN_DIR/kubectl}
if [ -n "$kubectl" ] && [ -f "$dir/admin.conf" ]; then
  "$kubectl" --kubeconfig "$dir/admin.conf" get nodes -o wide
fi

step "etcd backup to $dir/backups"
$ck backup etcd -f "$cluster_yaml"
$ck backup list -f "$cluster_yaml"
newest=$($ck backup list -f "$cluster_yaml" -o json | grep -o '"id": "etcd-[^"]*"' | sort | tail -n 1 | cut -d'"' -f4)
$ck backup verify -f "$cluster_yaml" "$newest"

step "monitoring: the exporter, then node-exporter, Prometheus and Alertmanager (TLS, logins)"
# The configs first: that also issues the monitoring CA and its certificates.
$ck monitor config -f "$cluster_yaml" --dir "$dir/monitoring" > /dev/null
# Restarted on every run, so it serves this run's binary.
stop_recorded "$dir/exporter.pid" "$ck"
nohup "$ck" monitor serve -f "$cluster_yaml" > "$dir/exporter.log" 2>&1 &
echo $! > "$dir/exporter.pid"
# node-exporter must be up everywhere; every other target is summarized below.
$ck monitor deploy -f "$cluster_yaml" --check-jobs node
state="$dir/$NAME-state"
prometheus_addr=$($ck sandbox status --name "$NAME" -o json | grep -o '"address": *"[^"]*"' | head -n 1 | cut -d'"' -f4):9090
# Every target scraped once (none "unknown", within 2 minutes), then how many are up; the
# down ones are named. Asked over HTTPS, verified against the monitoring CA, with the login
# read from its 0600 file (never on a command line).
PROM="https://$prometheus_addr" CA="$state/pki/monitoring/ca.crt" PW="$state/monitor-auth/web-password" \
  python3 - <<'PY' >&2
import base64, json, os, ssl, time, urllib.request
ctx = ssl.create_default_context(cafile=os.environ["CA"])
auth = base64.b64encode(b"admin:" + open(os.environ["PW"], "rb").read().strip()).decode()
def get(path):
    req = urllib.request.Request(os.environ["PROM"] + path, headers={"Authorization": "Basic " + auth})
    return json.load(urllib.request.urlopen(req, context=ctx, timeout=10))
for _ in range(120):
    targets = get("/api/v1/targets?state=active")["data"]["activeTargets"]
    if targets and all(t["health"] != "unknown" for t in targets):
        break
    time.sleep(1)
rules = sum(len(g["rules"]) for g in get("/api/v1/rules?type=alert")["data"]["groups"])
down = [t for t in targets if t["health"] != "up"]
https = sum(t["scrapeUrl"].startswith("https://") for t in targets)
print(f"Prometheus has loaded {rules} alert rules and scrapes {https} of {len(targets)} targets over HTTPS")
print(f"Prometheus targets up: {len(targets) - len(down)} of {len(targets)}")
for t in down:
    print("  down:", t["labels"].get("job"), t["scrapeUrl"], t["lastError"])
PY

cat <<EOF

The sandbox cluster '$NAME' is up.
  cluster.yaml   $cluster_yaml
  kubeconfig     $dir/admin.conf   (e.g. ${kubectl:-kubectl} --kubeconfig $dir/admin.conf get nodes)
  backups        $dir/backups      (clusterkit backup list -f $cluster_yaml)
  monitoring     $dir/monitoring   (prometheus.yml, rules, alertmanager.yml, Grafana dashboards)
  exporter       https://$EXPORTER_LISTEN/metrics   (client certificate of the monitoring CA required; pid $(cat "$dir/exporter.pid"), log $dir/exporter.log)
  prometheus     https://$prometheus_addr/targets   (Alertmanager on :9093; user admin, password in $state/monitor-auth/web-password)
  CA             $state/pki/monitoring/ca.crt   (e.g. curl --cacert it; Prometheus's client pair is pki/monitoring/prometheus-client.*)

Stop it all (exporter, sandbox) with:
  NAME=$NAME bash scripts/demo.sh down
EOF
