#!/usr/bin/env bash
# Install everything, then run the whole test suite twice: on SQLite and on PostgreSQL.
# Extra arguments go to pytest (e.g. scripts/test.sh -k lifecycle).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

TEST_PACKAGES=(chromium postgresql)

require_root
bash "$ROOT/scripts/setup.sh"
ensure_packages "${TEST_PACKAGES[@]}"
ensure_postgres
cd "$ROOT"

say "Lint (ruff)"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

say "Tests on SQLite"
env -u DATABASE_URL "$VENV/bin/pytest" "$@"

say "Tests on PostgreSQL"
DATABASE_URL="postgres:///kvmpanel" "$VENV/bin/pytest" "$@"
