#!/usr/bin/env bash
# The main job on a local default: a sandbox of real nodes on this machine, then clusterkit
# against it — offline bundle, every install phase, an etcd backup, monitoring configs and the
# exporter. Installs what it needs first (as root, Debian 12). Leaves the sandbox and the
# exporter running and prints how to use and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
. scripts/env.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CLUSTERKIT_CACHE/target}
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}
cargo build -q
ck=$CARGO_TARGET_DIR/debug/clusterkit
NODES=${NODES:-3}
NAME=${NAME:-demo}
step() { printf '\n== %s\n' "$*" >&2; }

step "sandbox: $NODES real nodes (systemd-nspawn + sshd)"
cluster_yaml=$($ck sandbox up --name "$NAME" --nodes "$NODES" | tail -n 1)
dir=$(dirname "$cluster_yaml")
echo "cluster description: $cluster_yaml"

step "offline bundle (the nodes have no route to a mirror)"
$ck bundle build --out "$dir/bundle"
grep -q '^packages:' "$cluster_yaml" || echo "packages: { bundle: ./bundle }" >> "$cluster_yaml"
grep -q '^backup:' "$cluster_yaml" || echo "backup: { store: file://./backups, retention: { keep_last: 7 } }" >> "$cluster_yaml"
# Alerts go to a webhook on this machine (point it at your chat bridge or pager in real life).
grep -q '^monitor:' "$cluster_yaml" || cat >> "$cluster_yaml" <<'YAML'
monitor:
  listen: "127.0.0.1:9842"
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

step "monitoring: configs and the exporter"
$ck monitor config -f "$cluster_yaml" --dir "$dir/monitoring"
listen=127.0.0.1:9842
if [ -f "$dir/exporter.pid" ] && kill -0 "$(cat "$dir/exporter.pid")" 2>/dev/null; then
  echo "exporter already running (pid $(cat "$dir/exporter.pid"))"
else
  nohup "$ck" monitor serve -f "$cluster_yaml" --listen "$listen" > "$dir/exporter.log" 2>&1 &
  echo $! > "$dir/exporter.pid"
fi

cat <<EOF

The sandbox cluster '$NAME' is up.
  cluster.yaml   $cluster_yaml
  kubeconfig     $dir/admin.conf   (e.g. ${kubectl:-kubectl} --kubeconfig $dir/admin.conf get nodes)
  backups        $dir/backups      (clusterkit backup list -f $cluster_yaml)
  monitoring     $dir/monitoring   (prometheus.yml, rules, alertmanager.yml, Grafana dashboards)
  exporter       http://$listen/metrics   (pid $(cat "$dir/exporter.pid"), log $dir/exporter.log)

Stop it all with:
  kill $(cat "$dir/exporter.pid"); $ck sandbox down --name $NAME
EOF
