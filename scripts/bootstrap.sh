#!/usr/bin/env bash
# Prepares this machine for the stack: system packages, the virtualenv, the project.
#   scripts/bootstrap.sh            what `make dev` needs (Mosquitto, Python packages)
#   scripts/bootstrap.sh --tests    also what the test suite needs (a reachable Postgres)
# Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--tests" ] && want_tests=1

say() { printf 'bootstrap: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else
    say "need root to run: $*"
    say "run it yourself, then run this again"
    exit 1
  fi
}

apt_updated=0
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing packages: $*; this machine has no apt-get, install them with its package manager"
    exit 1
  fi
  if [ "$apt_updated" -eq 0 ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  say "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Python 3.11 or newer.
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  say "Python 3.11 or newer is needed (found: $("$PYTHON" --version 2>&1 || echo none))"
  say "install it, or point PYTHON at one: PYTHON=python3.12 make dev"
  exit 1
fi

# Mosquitto (the broker) and its clients (mosquitto_pub and mosquitto_sub, used by tests and docs).
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
# The broker plugin that refuses shared subscriptions to devices is compiled from source.
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
[ -f /usr/include/mosquitto_broker.h ] || missing+=(mosquitto-dev)
[ -f /usr/include/mosquitto.h ] || missing+=(libmosquitto-dev)
if [ "$want_tests" -eq 1 ]; then
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  # The browser tests drive Debian's Chromium through Playwright (no browser download).
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fi
[ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"

# The virtualenv, reinstalled when pyproject.toml or the lock file changes; the lock file
# pins every package to the version CI and the Docker image install.
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing the project and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c requirements.lock -e ".[test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

[ "$want_tests" -eq 1 ] || exit 0

# Postgres for the test suite: TEST_POSTGRES_URL if given, else the local server over its socket.
if [ -n "${TEST_POSTGRES_URL:-}" ]; then
  exit 0
fi
if ! pg_isready -q -h /var/run/postgresql 2>/dev/null; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql
  fi
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    say "postgresql is installed but has no cluster; create one with pg_createcluster"
    exit 1
  fi
  say "starting Postgres $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h /var/run/postgresql && break; sleep 1; done
fi
# The tests connect as the current user over the socket (peer or trust authentication).
me=$(id -un)
if ! psql -h /var/run/postgresql -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
  say "creating the Postgres role $me for the tests"
  as_root runuser -u postgres -- psql -qc "CREATE ROLE \"$me\" LOGIN SUPERUSER" >/dev/null
fi
