#!/usr/bin/env bash
# The whole test suite, on SQLite and on Postgres, with a real Mosquitto. Used by `make test`
# and CI. Extra arguments go to pytest, e.g. scripts/test.sh -k listener --db sqlite
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --tests
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
