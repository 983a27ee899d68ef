#!/usr/bin/env bash
# Install and start everything the panel needs on this machine (Debian 12, as root).
# Idempotent: a second run only checks, and takes a few seconds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

require_root
started=$SECONDS
ensure_packages "${RUNTIME_PACKAGES[@]}"
ensure_redis
ensure_libvirt
ensure_python_env
ensure_node_modules
ensure_guest_image
prepare_database
django collectstatic --noinput -v 0
say "Setup done in $((SECONDS - started)) s"
