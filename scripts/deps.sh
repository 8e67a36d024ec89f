#!/usr/bin/env bash
# Installs everything clusterkit's demo and tests need on a fresh Debian 12 machine (as root).
# Idempotent and cached: packages via apt, the S3 test server and the Kubernetes v1.20.2
# binaries are built once into $CLUSTERKIT_CACHE (outside the repo) and reused.
set -euo pipefail

CACHE=${CLUSTERKIT_CACHE:-/var/cache/clusterkit}
mkdir -p "$CACHE"
log() { printf '[deps] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/deps.sh must run as root (it installs Debian packages and creates network namespaces)" >&2
  exit 1
fi

PACKAGES=(
  # sandbox nodes
  debootstrap systemd-container iproute2 iptables openssh-client openssh-server kmod procps
  # real components for tests
  etcd-server etcd-client prometheus prometheus-alertmanager prometheus-node-exporter
  # runtime bits that go into the offline bundle / the nodes
  containerd runc containernetworking-plugins busybox-static
  # building Rust crates and Kubernetes
  build-essential pkg-config cmake protobuf-compiler libprotobuf-dev git curl ca-certificates openssl dpkg-dev golang-1.19-go golang-github-modern-go-reflect2-dev
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Debian's postinst scripts would try to start etcd/prometheus on the host: we only want the
  # binaries, every test starts its own instance on a free port.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { dpkg --configure -a; apt-get install -y -qq --no-install-recommends "${missing[@]}"; }
  rm -f /usr/sbin/policy-rc.d
fi

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  echo "cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
export PATH="$HOME/.cargo/bin:$PATH"

# S3 test server (real SigV4), built once.
if [ ! -x "$CACHE/s3s/bin/s3s-fs" ]; then
  log "building s3s-fs 0.14.1 into $CACHE/s3s (about 4 minutes, once)"
  cargo install s3s-fs@0.14.1 --features binary --locked --root "$CACHE/s3s" -q
fi

# Kubernetes v1.20.2 server binaries from Debian's source package, built once.
[ -x "$(dirname "$0")/build-kube.sh" ] && "$(dirname "$0")/build-kube.sh"
true
