# Sourced by the scripts: where cached tools live, exported for the binary and the tests.
CLUSTERKIT_CACHE=${CLUSTERKIT_CACHE:-/var/cache/clusterkit}
export CLUSTERKIT_CACHE
export PATH="$HOME/.cargo/bin:/usr/lib/go-1.19/bin:$PATH"
# The S3 test server (s3s-fs), built by scripts/deps.sh.
[ -x "$CLUSTERKIT_CACHE/s3s/bin/s3s-fs" ] && export CLUSTERKIT_S3S_FS="$CLUSTERKIT_CACHE/s3s/bin/s3s-fs"
# Kubernetes v1.20.2 binaries built from Debian's source package by scripts/build-kube.sh (r2:
# reflect2 v1.0.2, see there).
[ -x "$CLUSTERKIT_CACHE/kube-v1.20.2-r2/bin/kube-apiserver" ] && export CLUSTERKIT_KUBE_BIN_DIR="$CLUSTERKIT_CACHE/kube-v1.20.2-r2/bin"
true
