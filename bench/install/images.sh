#!/usr/bin/env bash
# Benchmark: what the control-plane images cost in `clusterkit bundle build`. Three builds of
# the same bundle (packages, the Kubernetes binaries of $CLUSTERKIT_KUBE_BIN_DIR): without
# images, with images into an empty image cache (pause compiled, busybox, and the
# kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and etcd images built),
# and again with the cache warm. The packages are downloaded once beforehand, so the three
# differ only in the images. Then each control-plane image's size next to its binary's.
# Usage (root, after scripts/deps.sh): bash bench/install/images.sh
# Env: CK=path/to/clusterkit (default: a release build in $CARGO_TARGET_DIR or ./target).
# Prints markdown; paste it into bench/install/RESULTS.md with the date, the binary and the load.
set -euo pipefail
. "$(dirname "$0")/common.sh"
# common.sh built $WORK/bundle once (packages downloaded); an image cache of this run's own
# keeps the shared one out of the measurement.
CACHE_ROOT=${CLUSTERKIT_CACHE:-/var/cache/clusterkit}
export CLUSTERKIT_KUBE_SRC=${CLUSTERKIT_KUBE_SRC:-$CACHE_ROOT/kube-src}
BASE=(--base-status "$CACHE_ROOT/rootfs/bookworm/var/lib/dpkg/status")
timed() { # label, args… → one row: wall seconds, load
  local label=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  CLUSTERKIT_CACHE=$WORK/cache "$CK" bundle build "${BASE[@]}" --out "$WORK/bundle" "$@" >/dev/null
  t1=$(date +%s.%N)
  printf '| %s | %.1f | %s |\n' "$label" "$(echo "$t1 - $t0" | bc)" "$(cut -d' ' -f1 /proc/loadavg)"
}
echo "binary: $CK ($(stat -c %y "$CK" | cut -d. -f1)); $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| bundle build | wall (s) | load avg |"
echo "|---|---|---|"
timed "no images" --no-images
timed "images, empty cache" 
timed "images, warm cache"
echo
echo "| image | image (MB) | binary (MB) |"
echo "|---|---|---|"
python3 - "$WORK/bundle" <<'PY'
import json, os, sys
b = sys.argv[1]
m = json.load(open(os.path.join(b, "images/manifest.json")))
for i in m["images"]:
    c = i.get("component")
    if not c:
        continue
    binary = os.path.join(b, "bin", c) if c != "etcd" else os.path.join(b, ".downloads/etcd-server/usr/bin/etcd")
    print(f"| {i['name']} | {i['size'] / 1e6:.1f} | {os.path.getsize(binary) / 1e6:.1f} |")
PY
