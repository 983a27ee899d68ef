#!/usr/bin/env bash
# Install everything, prepare the database, and serve the panel on http://127.0.0.1:8000
# with its processes (web, Celery worker, Celery beat) until Ctrl+C.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

bash "$ROOT/scripts/setup.sh"
ensure_rescue_image  # a second build of the guest image (its own root UUID), offered for rescue
django bootstrap_panel --image "$GUEST_IMAGE" --rescue-image "$RESCUE_IMAGE"
say "Serving on http://${KVMPANEL_BIND:-127.0.0.1}:${KVMPANEL_PORT:-8000}/ (Ctrl+C stops every process)"
cd "$ROOT"
exec "$VENV/bin/honcho" start -f Procfile
