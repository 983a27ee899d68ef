#!/usr/bin/env bash
# Install everything, then run the whole test suite: every test on SQLite (the
# embedded default), everything but the slow integration tests (real guests
# booting under emulation, Chromium) again on PostgreSQL, to stay well inside CI's
# time, and the fault-injection suite (tests/faults) on PostgreSQL.
# Extra arguments go to pytest (e.g. scripts/test.sh -k lifecycle).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# grub-pc-bin, grub-common, xorriso and mtools: grub-mkrescue builds the bootable ISO of the ISO boot test.
# nginx and systemd (systemd-analyze): the production install's test runs its nginx site and checks its units.
# openssh-server: the backup tests start an sshd of their own on 127.0.0.1 for the SSH backup store.
# dnsutils: the reverse DNS tests ask their PowerDNS with dig.
# iproute2, openssh-client, netcat-openbsd, iputils-ping, tcpdump: the public networking tests' peers in
# namespaces reach guests by ssh, and tcpdump watches for spoofed packets.
TEST_PACKAGES=(chromium postgresql grub-pc-bin grub-common xorriso mtools nginx systemd openssh-server
  iproute2 openssh-client netcat-openbsd iputils-ping tcpdump dnsutils)

require_root
bash "$ROOT/scripts/setup.sh"
ensure_packages "${TEST_PACKAGES[@]}"
ensure_postgres
ensure_rescue_image
cd "$ROOT"

# pytest answers 5 when a run selects no test (e.g. `-k lifecycle` in the passes without it): not a failure.
run_pytest() {
  local status=0
  "$@" || status=$?
  [ "$status" -eq 0 ] || [ "$status" -eq 5 ] || return "$status"
}

say "Lint (ruff)"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

# The unit tests run on every core (pytest-xdist; each worker has its own test database and Redis
# database); the integration tests one at a time, as they share the host's libvirtd and boot guests.
# --durations: the slowest tests in the log, to see where CI's time goes.
UNIT=(-n auto --ignore=tests/integration --ignore=tests/faults --durations=10)

say "Unit tests on SQLite"
run_pytest env -u DATABASE_URL "$VENV/bin/pytest" "${UNIT[@]}" "$@"

say "Integration tests on SQLite (real guests, Chromium)"
run_pytest env -u DATABASE_URL "$VENV/bin/pytest" tests/integration --durations=30 "$@"

say "Unit tests on PostgreSQL"
run_pytest env DATABASE_URL="postgres:///kvmpanel" "$VENV/bin/pytest" "${UNIT[@]}" "$@"

# Its own Redis, worker, web process, beat and monitor, killed and cut on purpose; the database
# cut goes through a TCP proxy, so it runs on PostgreSQL.
say "Fault injection (PostgreSQL, real processes)"
run_pytest env DATABASE_URL="postgres:///kvmpanel" "$VENV/bin/pytest" tests/faults "$@"
