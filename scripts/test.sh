#!/usr/bin/env bash
# Install everything, then run the whole test suite: every test on SQLite (the
# embedded default), and everything but the slow integration tests (real guests
# booting under emulation, Chromium) again on PostgreSQL, to stay well inside CI's time.
# Extra arguments go to pytest (e.g. scripts/test.sh -k lifecycle).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# grub-pc-bin, grub-common, xorriso and mtools: grub-mkrescue builds the bootable ISO of the ISO boot test.
TEST_PACKAGES=(chromium postgresql grub-pc-bin grub-common xorriso mtools)

require_root
bash "$ROOT/scripts/setup.sh"
ensure_packages "${TEST_PACKAGES[@]}"
ensure_postgres
ensure_rescue_image
cd "$ROOT"

say "Lint (ruff)"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

say "Tests on SQLite"
env -u DATABASE_URL "$VENV/bin/pytest" "$@"

say "Tests on PostgreSQL (without tests/integration)"
DATABASE_URL="postgres:///kvmpanel" "$VENV/bin/pytest" --ignore=tests/integration "$@"
