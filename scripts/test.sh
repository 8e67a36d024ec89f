#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root): installs what it needs, then
# runs every unit, integration and end-to-end test against real components.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
. scripts/env.sh

cargo fmt --all -- --check
cargo build --workspace --all-targets --locked 2>&1 | tail -n 3
if command -v cargo-nextest >/dev/null 2>&1; then
  # Every test binary in parallel; sandbox tests each make their own uniquely named nodes.
  cargo nextest run --workspace --no-fail-fast --failure-output final
else
  cargo test --workspace --no-fail-fast
fi
