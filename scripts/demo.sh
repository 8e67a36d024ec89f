#!/usr/bin/env bash
# The main job on a local default: a sandbox of real nodes on this machine, then clusterkit
# against it. Installs what it needs first (as root, Debian 12).
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

cluster_yaml=$($ck sandbox up --name "$NAME" --nodes "$NODES" | tail -n 1)
echo "cluster description: $cluster_yaml"
$ck ping -f "$cluster_yaml"
$ck exec -f "$cluster_yaml" -- uname -a
echo
echo "The sandbox '$NAME' stays up. Tear it down with: $ck sandbox down --name $NAME"
