# Shared helpers for the setup, run and test scripts. Source it; do not run it.
# Every function checks before it acts, so a second run is fast and harmless.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
CACHE_DIR="${KVMPANEL_CACHE:-/var/cache/kvmpanel}"
GUEST_IMAGE="$CACHE_DIR/images/debian-12-cloud.qcow2"
# A second build of the same recipe, for rescue tests: its root file system has
# its own UUID, so a rescue system never mounts the customer's disk as its root.
RESCUE_IMAGE="$CACHE_DIR/images/debian-12-rescue.qcow2"

# What the panel's processes need on a node (the setup and the production install alike).
RUNTIME_PACKAGES=(
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc python3-dev python3-venv
  qemu-system-x86 qemu-utils redis-server dnsmasq-base
  restic openssh-client
  # nwfilter (every VM NIC carries a traffic filter) applies its rules with ebtables-nft, ip(6)tables-nft
  iptables
  # reverse DNS: PowerDNS Authoritative with its SQLite backend (the Procfile's dns process)
  pdns-server pdns-backend-sqlite3
)
# Node.js may come from elsewhere than Debian; install Debian's npm only when there is none.
command -v npm >/dev/null || RUNTIME_PACKAGES+=(npm)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
have_systemd() { [ -d /run/systemd/system ]; }

require_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "Run this as root (it installs packages and starts libvirtd)." >&2
    exit 1
  fi
}

# Install the Debian packages that are missing, in one apt-get call.
ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "Installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
}

# Run "$@" until it succeeds, for at most $1 seconds.
wait_for() {
  local seconds=$1; shift
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for: $*" >&2; return 1; fi
    sleep 0.2
  done
}

ensure_redis() {
  if ! redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q PONG; then
    say "Starting Redis"
    if have_systemd; then
      systemctl start redis-server
    else
      mkdir -p /var/lib/redis /var/log/redis
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --appendonly yes \
        --dir /var/lib/redis --logfile /var/log/redis/kvmpanel.log
    fi
    wait_for 20 sh -c 'redis-cli -h 127.0.0.1 ping | grep -q PONG'
  fi
  ensure_redis_persistence
}

# Queued tasks and the Channels layer live in Redis: with the append-only file a Redis restart
# loses nothing (without it, everything queued was gone; the operation sweeper would send it
# again, but only seconds later). Turned on in a running Redis too, and kept in its configuration
# file when it has one (CONFIG REWRITE fails harmlessly when it was started without one).
ensure_redis_persistence() {
  if redis-cli -h 127.0.0.1 config get appendonly | grep -qx yes; then return 0; fi
  say "Turning on Redis persistence (appendonly)"
  redis-cli -h 127.0.0.1 config set appendonly yes >/dev/null
  redis-cli -h 127.0.0.1 config rewrite >/dev/null 2>&1 || true
}

ensure_libvirt() {
  # The qemu user must open /dev/kvm; after boot it can be root-only.
  if [ -e /dev/kvm ]; then
    chgrp kvm /dev/kvm && chmod 660 /dev/kvm
  fi
  if have_systemd; then
    systemctl start virtlogd libvirtd
  else
    # Every domain start fails with a socket error when virtlogd is not there.
    pgrep -x virtlogd >/dev/null || virtlogd -d
    pgrep -x libvirtd >/dev/null || libvirtd -d
  fi
  wait_for 30 virsh -c qemu:///system version
}

# A virtual environment with requirements.txt installed: the checkout's own, or another (install.sh).
ensure_python_env() {
  local venv=${1:-$VENV} requirements=${2:-$ROOT/requirements.txt}
  [ -x "$venv/bin/python" ] || { say "Creating the Python environment in $venv"; /usr/bin/python3 -m venv "$venv"; }
  local stamp="$venv/.requirements.sha256" want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "Installing Python packages"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -r "$requirements"
    echo "$want" >"$stamp"
  fi
}

ensure_node_modules() {
  local stamp="$ROOT/node_modules/.package-lock.sha256" want
  want=$(cat "$ROOT/package.json" "$ROOT/package-lock.json" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "Installing front-end packages"
    (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
}

ensure_guest_image() {
  bash "$ROOT/scripts/build-guest-image.sh" "$GUEST_IMAGE"
}

ensure_rescue_image() {
  bash "$ROOT/scripts/build-guest-image.sh" "$RESCUE_IMAGE"
}

# PostgreSQL for the test run on it: started if it is not, with a role for root.
ensure_postgres() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    say "Starting PostgreSQL"
    if have_systemd; then
      systemctl start postgresql
    else
      local version
      version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
      if [ -z "$version" ]; then
        version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
        pg_createcluster "$version" main
      fi
      pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
    wait_for 30 pg_isready -q -h 127.0.0.1 -p 5432
  fi
  if ! su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='root'\"" | grep -q 1; then
    su postgres -c "createuser --createdb root"
  fi
}

django() { (cd "$ROOT" && "$PY" manage.py "$@"); }

prepare_database() {
  django migrate --noinput -v 0
}
