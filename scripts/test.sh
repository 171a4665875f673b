#!/usr/bin/env bash
# Runs tandem's whole test suite on a fresh machine: unit, integration (including the
# crash-safety and disk-full tests), doc tests.
#
#   scripts/test.sh
#
# Environment:
#   TANDEM_CRASH_CYCLES   kill/reopen cycles in the crash-safety test (default 50)
#   TANDEM_CRASH_SEED     replay a crash-safety run
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "scripts/test.sh: cargo is required (install Rust with rustup)" >&2
  exit 1
fi

# Benchmarks are not tests: they run optimised via `cargo bench` (CI only compiles them).
echo "==> cargo test (lib, bin, integration)" >&2
cargo test --locked --lib --bins --tests
echo "==> cargo test (doc tests)" >&2
cargo test --locked --doc
