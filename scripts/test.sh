#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root): installs what it needs, then
# runs every unit, integration and end-to-end test against real components.
set -euo pipefail
cd "$(dirname "$0")/.."
# Golden tests rewrite their files instead of comparing when asked to; a CI run must compare.
if [ -n "${CI:-}" ] && [ -n "${CLUSTERKIT_UPDATE_GOLDEN:-}" ]; then
  echo "scripts/test.sh: CLUSTERKIT_UPDATE_GOLDEN is set under CI; golden files are only compared there" >&2
  exit 2
fi
bash scripts/deps.sh
. scripts/env.sh
# Build outside the repo so a fresh clone (CI) reuses compiled dependencies; line tables are
# enough for backtraces and keep the cache and link times small.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CLUSTERKIT_CACHE/target}
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}
# A fresh clone rebuilds the workspace crates anyway; incremental state would only fill the disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
if command -v cargo-nextest >/dev/null 2>&1; then
  # Every test binary in parallel; sandbox tests each make their own uniquely named nodes.
  cargo nextest run --workspace --no-fail-fast --failure-output final
else
  cargo test --workspace --no-fail-fast
fi
