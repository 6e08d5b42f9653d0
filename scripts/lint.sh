#!/usr/bin/env bash
# The gates of `make test` before the tests: formatting, clippy with warnings as errors, and
# documentation without warnings. A toolchain without rustfmt or clippy gets them from rustup.
set -euo pipefail
cd "$(dirname "$0")/.."
for component in rustfmt clippy; do
  tool=$component
  [ "$component" = rustfmt ] && tool=fmt
  if ! cargo "$tool" --version >/dev/null 2>&1; then
    rustup component add "$component" >&2
  fi
done
cargo fmt --all -- --check
cargo clippy --quiet --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps
