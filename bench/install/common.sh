# Shared set-up of run.sh and full.sh (sourced): the release binary $CK, the node counts
# ${SIZES[@]} from the arguments (default 1 3 6), a scratch directory $WORK with the event logs
# in $EVENTS and the offline bundle in $WORK/bundle, and a trap that removes the sandbox named
# $name (when set) and $WORK on exit.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. scripts/env.sh
[ -n "${CLUSTERKIT_KUBE_BIN_DIR:-}" ] || { echo "CLUSTERKIT_KUBE_BIN_DIR unset: run scripts/deps.sh" >&2; exit 1; }
CK=${CK:-${CARGO_TARGET_DIR:-./target}/release/clusterkit}
[ -x "$CK" ] || cargo build --release -q
SIZES=("$@"); [ ${#SIZES[@]} -gt 0 ] || SIZES=(1 3 6)
WORK=$(mktemp -d)
EVENTS=${KEEP_EVENTS:-$WORK/events}; mkdir -p "$EVENTS"
name=
cleanup() { [ -z "$name" ] || $CK sandbox down --name "$name" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
# Packages (containerd, runc, zstd, etcd-server, CNI plugins), the Kubernetes binaries of
# $CLUSTERKIT_KUBE_BIN_DIR and the pause/busybox images.
$CK bundle build --out "$WORK/bundle" >/dev/null
