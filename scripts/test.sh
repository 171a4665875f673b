#!/usr/bin/env bash
# Runs tandem's whole test suite on a fresh machine: unit, integration (including the
# crash-safety and disk-full tests and the live cloud tests), doc tests.
#
#   scripts/test.sh
#
# It installs and starts the real services the cloud tests run against (PostgreSQL and
# PostgREST, see scripts/services.sh), exports their coordinates to the tests, and stops
# them again on exit, whether the tests pass, fail or are interrupted.
#
# Environment:
#   TANDEM_CRASH_CYCLES   kill/reopen cycles in the crash-safety test (default 50)
#   TANDEM_CRASH_SEED     replay a crash-safety run
#   CI=true               a live test that finds no services fails instead of skipping
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "scripts/test.sh: cargo is required (install Rust with rustup)" >&2
  exit 1
fi

stop_services() {
  if [[ -n "${TANDEM_SERVICES_RUN_DIR:-}" ]]; then
    echo "==> stopping test services" >&2
    scripts/services.sh stop "$TANDEM_SERVICES_RUN_DIR" || true
    unset TANDEM_SERVICES_RUN_DIR
  fi
}
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "==> installing and starting test services (PostgreSQL, PostgREST)" >&2
scripts/services.sh install
# Captured first so that a failed start stops the script (set -e does not see a failure
# inside `eval "$(...)"`); `start` cleans up after itself when it fails.
service_exports="$(scripts/services.sh start)"
eval "$service_exports"
export TANDEM_PG_URL TANDEM_PG_DB TANDEM_POSTGREST_URL TANDEM_POSTGREST_JWT_SECRET \
  TANDEM_SERVICES_RUN_DIR

# Benchmarks are not tests: they run optimised via `cargo bench` (CI only compiles them).
echo "==> cargo test (lib, bin, integration)" >&2
cargo test --locked --lib --bins --tests
echo "==> cargo test (doc tests)" >&2
cargo test --locked --doc
