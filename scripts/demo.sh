#!/usr/bin/env bash
# The main job on a local default: a sandbox of real nodes on this machine, then clusterkit
# against it — offline bundle, every install phase, node-exporter, an etcd backup, monitoring
# configs and the exporter with a Prometheus scraping it. Installs what it needs first (as
# root, Debian 12).
# Leaves the sandbox, the exporter and Prometheus running and prints how to use them;
# `bash scripts/demo.sh down` stops the exporter and Prometheus (by their recorded PIDs) and
# removes the sandbox. Rerunning restarts the exporter and Prometheus.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-3}
NAME=${NAME:-demo}
EXPORTER_LISTEN=127.0.0.1:9842
PROMETHEUS_LISTEN=${PROMETHEUS_LISTEN:-127.0.0.1:9090}
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
    stop_recorded "$dir/prometheus.pid" "$(command -v prometheus || echo prometheus)"
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

step "offline bundle (the nodes have no route to a mirror)"
$ck bundle build --out "$dir/bundle" --package prometheus-node-exporter
grep -q '^packages:' "$cluster_yaml" || echo "packages: { bundle: ./bundle }" >> "$cluster_yaml"
grep -q '^backup:' "$cluster_yaml" || echo "backup: { store: file://./backups, retention: { keep_last: 7 } }" >> "$cluster_yaml"
# Alerts go to a webhook on this machine (point it at your chat bridge or pager in real life).
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

step "node-exporter on every node (for the Prometheus below)"
$ck run scripts/demo-node-exporter.yaml -f "$cluster_yaml"

step "etcd backup to $dir/backups"
$ck backup etcd -f "$cluster_yaml"
$ck backup list -f "$cluster_yaml"
newest=$($ck backup list -f "$cluster_yaml" -o json | grep -o '"id": "etcd-[^"]*"' | sort | tail -n 1 | cut -d'"' -f4)
$ck backup verify -f "$cluster_yaml" "$newest"

step "monitoring: configs, the exporter and Prometheus"
$ck monitor config -f "$cluster_yaml" --dir "$dir/monitoring"
# Restarted on every run, so they serve this run's binary and configs.
stop_recorded "$dir/exporter.pid" "$ck"
nohup "$ck" monitor serve -f "$cluster_yaml" --listen "$EXPORTER_LISTEN" > "$dir/exporter.log" 2>&1 &
echo $! > "$dir/exporter.pid"

prometheus=$(command -v prometheus || true)
if [ -n "$prometheus" ]; then
  stop_recorded "$dir/prometheus.pid" "$prometheus"
  # The generated prometheus.yml scrapes the exporter at monitor.listen (the address above),
  # node-exporter, etcd (TLS, client cert), the control plane and the kubelets of the sandbox
  # nodes, and loads the generated alert rules.
  nohup "$prometheus" --config.file="$dir/monitoring/prometheus.yml" \
    --storage.tsdb.path="$dir/prometheus-data" --web.listen-address="$PROMETHEUS_LISTEN" \
    > "$dir/prometheus.log" 2>&1 &
  echo $! > "$dir/prometheus.pid"
  # Ready when Prometheus has scraped the exporter successfully (up == 1), within 3 minutes.
  up_query="http://$PROMETHEUS_LISTEN/api/v1/query?query=up%7Bjob%3D%22clusterkit%22%7D"
  for i in $(seq 180); do
    kill -0 "$(cat "$dir/prometheus.pid")" 2>/dev/null \
      || { tail -n 20 "$dir/prometheus.log" >&2; echo "Prometheus exited (log: $dir/prometheus.log)" >&2; exit 1; }
    answer=$(curl -fsS "$up_query" 2>/dev/null || true)
    grep -q '"value":\[[0-9.]*,"1"\]' <<< "$answer" && break
    [ "$i" = 180 ] && { echo "Prometheus never saw the exporter up: $(curl -sS "$up_query")" >&2; exit 1; }
    sleep 1
  done
  alert_rules=$(curl -fsS "http://$PROMETHEUS_LISTEN/api/v1/rules?type=alert" | grep -o '"type":"alerting"' | wc -l)
  echo "Prometheus scrapes the exporter (up == 1) and has loaded $alert_rules alert rules" >&2
  # Every target scraped once (none "unknown", within a minute), then how many are up; the
  # down ones are named, so a problem shows here and not only on the targets page.
  targets_url="http://$PROMETHEUS_LISTEN/api/v1/targets?state=active"
  for _ in $(seq 60); do
    curl -fsS "$targets_url" 2>/dev/null | grep -q '"health":"unknown"' || break
    sleep 1
  done
  curl -fsS "$targets_url" | python3 -c 'import json,sys
targets = json.load(sys.stdin)["data"]["activeTargets"]
down = [t for t in targets if t["health"] != "up"]
print(f"Prometheus targets up: {len(targets) - len(down)} of {len(targets)}")
for t in down:
    print("  down:", t["labels"].get("job"), t["scrapeUrl"], t["lastError"])' >&2
  prometheus_line="  prometheus     http://$PROMETHEUS_LISTEN/targets   (alerts: /alerts; pid $(cat "$dir/prometheus.pid"), log $dir/prometheus.log)"
else
  prometheus_line="  prometheus     not installed (scripts/deps.sh installs it); start it with $dir/monitoring/prometheus.yml"
fi

cat <<EOF

The sandbox cluster '$NAME' is up.
  cluster.yaml   $cluster_yaml
  kubeconfig     $dir/admin.conf   (e.g. ${kubectl:-kubectl} --kubeconfig $dir/admin.conf get nodes)
  backups        $dir/backups      (clusterkit backup list -f $cluster_yaml)
  monitoring     $dir/monitoring   (prometheus.yml, rules, alertmanager.yml, Grafana dashboards)
  exporter       http://$EXPORTER_LISTEN/metrics   (pid $(cat "$dir/exporter.pid"), log $dir/exporter.log)
$prometheus_line

Stop it all (exporter, Prometheus, sandbox) with:
  NAME=$NAME bash scripts/demo.sh down
EOF
