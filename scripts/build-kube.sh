#!/usr/bin/env bash
# Builds the Kubernetes v1.20.2 binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kubeadm, kube-proxy, kubectl) from Debian 12's own `kubernetes`
# source package, for the tests and the sandbox demo (see "Kubernetes binaries" in DESIGN.md).
#
# Output: $CLUSTERKIT_CACHE/kube-v1.20.2-r2/bin/ (default cache /var/cache/clusterkit). Built in a
# scratch directory and renamed into place only when every binary reports v1.20.2, so a half
# build is never used; skipped when already present; serialised with flock. 5-12 minutes
# on 2 cores (721 s on a loaded one), once.
#
# Kept afterwards (cheap, makes a rebuild work offline): the downloaded source package
# ($CACHE/kube-src, ~40 MB). Removed: the unpacked tree and the Go build cache (~2 GB).
# Limits: Debian ships only this one Kubernetes version; Go 1.19 builds it in GOPATH mode only.
#
# One patch to the source: the vendored github.com/modern-go/reflect2 v1.0.1 is replaced by
# Debian's v1.0.2 (golang-github-modern-go-reflect2-dev). v1.0.1 reads Go's runtime map
# iterator layout, which changed in Go 1.18: built with Go 1.19, kube-apiserver then SIGSEGVs
# in json-iterator's map encoding on every custom resource write. REVISION names the output
# directory, so a cache holding an unpatched build is rebuilt once.
set -euo pipefail

VERSION=v1.20.2
REVISION=r2                         # bump when the build changes (new output dir, one rebuild)
CACHE=${CLUSTERKIT_CACHE:-/var/cache/clusterkit}
OUT="$CACHE/kube-$VERSION-$REVISION"
SRC_DL="$CACHE/kube-src"            # downloaded .dsc + tarballs (kept)
WORK="$CACHE/.kube-$VERSION-$REVISION.build"  # unpacked tree, GOPATH, Go cache (removed on success)
GO_BIN=${CLUSTERKIT_GO_BIN:-/usr/lib/go-1.19/bin}
# reflect2 >= 1.0.2 (go_above_118.go is its Go 1.18 fix), from Debian's -dev package.
REFLECT2_SRC=${CLUSTERKIT_REFLECT2_SRC:-/usr/share/gocode/src/github.com/modern-go/reflect2}
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubeadm kube-proxy kubectl)

log() { printf '[build-kube] %s\n' "$*" >&2; }
die() { printf '[build-kube] ERROR: %s\n' "$*" >&2; exit 1; }

complete() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$OUT/bin/$b" ] || return 1; done
}

if complete; then
  log "Kubernetes $VERSION binaries already in $OUT/bin (nothing to do)"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (adds a deb-src apt source); run scripts/deps.sh"
[ -x "$GO_BIN/go" ] || die "Go 1.19 not found at $GO_BIN/go (apt-get install golang-1.19-go)"
command -v dpkg-source >/dev/null || die "dpkg-source not found (apt-get install dpkg-dev)"
[ -f "$REFLECT2_SRC/go_above_118.go" ] ||
  die "reflect2 >= 1.0.2 not found in $REFLECT2_SRC (apt-get install golang-github-modern-go-reflect2-dev)"

mkdir -p "$CACHE"
exec 9>"$CACHE/.kube-$VERSION-$REVISION.lock"
if ! flock -n 9; then
  log "another build is running; waiting for its lock"
  flock 9
fi
if complete; then
  log "Kubernetes $VERSION binaries were built by a concurrent run: $OUT/bin"
  exit 0
fi

START=$(date +%s)
mkdir -p "$WORK" "$SRC_DL"
BUILD_LOG="$WORK/build.log"
: >"$BUILD_LOG"
# Every step's output goes to the log; on failure its tail is shown.
on_error() {
  local rc=$?
  log "FAILED (exit $rc); last lines of $BUILD_LOG:"
  tail -n 40 "$BUILD_LOG" >&2 || true
  log "the scratch tree $WORK is left for inspection; the next run starts it again"
  exit "$rc"
}
trap on_error ERR
run() { "$@" >>"$BUILD_LOG" 2>&1; }

# --- 1. the source package (downloaded once, kept) ---------------------------------------
if ! ls "$SRC_DL"/kubernetes_*.dsc >/dev/null 2>&1; then
  if ! apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes'; then
    # A deb-src stanza mirroring the deb one for bookworm (same URIs and Signed-By).
    SRC_LIST=/etc/apt/sources.list.d/clusterkit-deb-src.sources
    uris=$(awk '/^URIs:/ && !done { sub(/^URIs:[ \t]*/, ""); print; done=1 }' \
      /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    signed=$(awk '/^Signed-By:/ && !done { sub(/^Signed-By:[ \t]*/, ""); print; done=1 }' \
      /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    if [ -z "$uris" ] && [ -f /etc/apt/sources.list ]; then
      uris=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ { print $2; exit }' /etc/apt/sources.list)
    fi
    uris=${uris:-http://deb.debian.org/debian}
    signed=${signed:-/usr/share/keyrings/debian-archive-keyring.gpg}
    log "adding deb-src for bookworm ($uris) in $SRC_LIST"
    printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: %s\n' \
      "$uris" "$signed" >"$SRC_LIST"
    ok=0
    for _ in 1 2 3 4 5 6; do
      if run apt-get update -qq; then ok=1; break; fi
      log "apt-get update failed (another apt running?); retrying in 10 s"
      sleep 10
    done
    [ "$ok" = 1 ] || die "apt-get update failed; see $BUILD_LOG"
  fi
  log "downloading Debian's kubernetes source package into $SRC_DL"
  (cd "$SRC_DL" && run apt-get source --download-only -qq kubernetes) \
    || die "apt-get source kubernetes failed; see $BUILD_LOG"
fi
DSC=$(ls "$SRC_DL"/kubernetes_*.dsc | head -n1)

# --- 2. unpack into a GOPATH (module mode fails with Go 1.19; GOPATH mode works) ----------
export GOPATH="$WORK/gopath"
KROOT="$GOPATH/src/k8s.io/kubernetes"
rm -rf "$GOPATH" "$WORK/unpack"
mkdir -p "$GOPATH/src/k8s.io"
log "unpacking $(basename "$DSC")"
run dpkg-source --no-check -x "$DSC" "$WORK/unpack"
mv "$WORK/unpack" "$KROOT"

# reflect2 v1.0.1 -> v1.0.2 (see the header). Only its non-test Go and assembly files; the
# vendored LICENSE stays. modules.txt is updated too although GOPATH mode does not read it.
R2="$KROOT/vendor/github.com/modern-go/reflect2"
[ -d "$R2" ] || die "no vendored reflect2 at $R2"
log "replacing vendored reflect2 with $REFLECT2_SRC (v1.0.2)"
find "$R2" -maxdepth 1 -type f ! -name LICENSE -delete
find "$REFLECT2_SRC" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' \
  -exec cp {} "$R2/" \;
[ -f "$R2/go_above_118.go" ] || die "reflect2 copy into $R2 failed"
sed -i '/^# github.com\/modern-go\/reflect2 /s/v1\.0\.1/v1.0.2/g' "$KROOT/vendor/modules.txt"

export PATH="$GO_BIN:$PATH"
export GO111MODULE=off GOPROXY=off CGO_ENABLED=0 GOFLAGS=
# The Go cache survives a failed run (a retry is then fast) and is removed on success.
export GOCACHE="$WORK/gocache"
cd "$KROOT"

# --- 3. the one generated file missing from the tarball ----------------------------------
log "generating pkg/generated/openapi/zz_generated.openapi.go"
run go build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
# Every package tagged +k8s:openapi-gen=, as import paths (vendored ones without vendor/),
# minus code-generator and sample-apiserver, as upstream's Makefile.generated_files does.
# grep -R follows vendor's symlinks into staging/; staging paths are mapped like vendor ones.
dirs=()
for d in pkg cmd plugin vendor/k8s.io staging/src/k8s.io; do [ -d "$d" ] && dirs+=("$d"); done
inputs=$(grep -Rl --include='*.go' '+k8s:openapi-gen=' "${dirs[@]}" \
  | xargs -n1 dirname \
  | sed -e 's,^staging/src/,,' -e 's,^vendor/,,' -e '/^k8s.io\//!s,^,k8s.io/kubernetes/,' \
  | grep -v -e '^k8s.io/code-generator/' -e '^k8s.io/sample-apiserver/' \
  | sort -u)
count=$(printf '%s\n' "$inputs" | wc -l)
[ "$count" -gt 50 ] || die "found only $count packages tagged +k8s:openapi-gen= (expected ~80)"
boilerplate=hack/boilerplate/boilerplate.generatego.txt
[ -f "$boilerplate" ] || boilerplate=vendor/k8s.io/code-generator/hack/boilerplate.go.txt
run "$WORK/openapi-gen" \
  --input-dirs "$(printf '%s\n' "$inputs" | paste -sd, -)" \
  --output-package k8s.io/kubernetes/pkg/generated/openapi \
  -O zz_generated.openapi \
  --go-header-file "$boilerplate" \
  --output-base "$GOPATH/src" \
  -r "$WORK/openapi-violations.list"
[ -s pkg/generated/openapi/zz_generated.openapi.go ] || die "openapi-gen produced no file"
if [ -f api/api-rules/violation_exceptions.list ] &&
   ! cmp -s "$WORK/openapi-violations.list" api/api-rules/violation_exceptions.list; then
  log "note: openapi rule-violation report differs from api/api-rules/violation_exceptions.list"
fi
log "openapi: $count packages"

# --- 4. the binaries -----------------------------------------------------------------------
ldflags="-s -w"
for pkg in k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version \
           k8s.io/kubernetes/vendor/k8s.io/component-base/version; do
  ldflags+=" -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=20"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u -r "$DSC" +%Y-%m-%dT%H:%M:%SZ)"
  ldflags+=" -X $pkg.gitCommit=debian-$(basename "$DSC" .dsc | sed 's/^kubernetes_//')"
done
STAGE="$WORK/stage/kube-$VERSION-$REVISION"
rm -rf "$WORK/stage"
mkdir -p "$STAGE/bin"
log "go build ${BINARIES[*]} (several minutes)"
pkgs=()
for b in "${BINARIES[@]}"; do pkgs+=("./cmd/$b"); done
run go build -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$STAGE/bin/" "${pkgs[@]}"

# --- 5. check, then publish atomically -------------------------------------------------------
for b in "${BINARIES[@]}"; do
  case $b in
    kubectl) v=$("$STAGE/bin/$b" version --client --short 2>&1 || true) ;;
    kubeadm) v=$("$STAGE/bin/$b" version -o short 2>&1 || true) ;;
    *) v=$("$STAGE/bin/$b" --version 2>&1 || true) ;;
  esac
  case $v in *"$VERSION"*) ;; *) die "$b does not report $VERSION: $v" ;; esac
done
(cd "$STAGE/bin" && sha256sum "${BINARIES[@]}" >"$STAGE/SHA256SUMS")
printf '%s (%s, reflect2 v1.0.2) built from %s by scripts/build-kube.sh on %s\n' "$VERSION" \
  "$REVISION" "$(basename "$DSC")" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$STAGE/BUILD-INFO"
rm -rf "$OUT"
mv "$STAGE" "$OUT"
trap - ERR

cd /
rm -rf "$WORK"
log "built Kubernetes $VERSION in $(( $(date +%s) - START )) s: $OUT/bin ($(du -sh "$OUT" | cut -f1); source kept in $SRC_DL, $(du -sh "$SRC_DL" | cut -f1))"
