#!/usr/bin/env bash
# Runs the pkcs11: URI parser fuzz target briefly (cargo-fuzz needs a nightly toolchain).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
if ! rustup toolchain list 2>/dev/null | grep -q nightly; then
  echo "fuzz: no nightly toolchain here; cargo-fuzz needs one (rustup toolchain install nightly)" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
cargo +nightly fuzz run uri -- -max_total_time="$seconds"
