#!/usr/bin/env bash
# Install and start everything the panel needs on this machine (Debian 12, as root).
# Idempotent: a second run only checks, and takes a few seconds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

RUNTIME_PACKAGES=(
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc python3-dev python3-venv
  qemu-system-x86 qemu-utils redis-server dnsmasq-base
)
# Node.js may come from elsewhere than Debian; install Debian's npm only when there is none.
command -v npm >/dev/null || RUNTIME_PACKAGES+=(npm)

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
