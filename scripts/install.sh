#!/usr/bin/env bash
# Install kvmpanel for production on a Debian 12 host, as root, or upgrade it after `git pull`:
#
#   scripts/install.sh --domain panel.example.com [--cert FILE --key FILE]
#
# It sets up a system user (kvmpanel), the code and its Python environment in /opt/kvmpanel,
# PostgreSQL (a role and a database of the panel's own), the panel's own Redis (loopback, a
# password, AOF), the production settings in /etc/kvmpanel/kvmpanel.env, migrations and static
# files, systemd units under kvmpanel.target, nightly database dumps, nginx as the TLS proxy with
# your certificate or a self-signed one, and the first admin, whose password it prints once.
# Run again, it changes only what is not as it should be: after `git pull` it is the upgrade (a
# dump of the database is taken first when there are new migrations). Options given once are
# remembered in /etc/kvmpanel/install.conf.
#
# Options:
#   --domain NAME        the panel's public name (required the first time)
#   --cert FILE --key FILE
#                        your certificate (full chain) and its key, e.g. Let's Encrypt's; without
#                        them, a self-signed certificate for the domain is made
#   --self-signed        go back to a self-signed certificate after --cert
#   --no-local-node      do not register this machine's libvirtd as a node (add nodes in the
#                        backoffice instead)
# For unusual hosts and for the tests:
#   --prefix DIR         install every file under DIR instead of / (a staged install: systemd and
#                        the system's nginx are left alone; the user and the database are real)
#   --user NAME          the system user, PostgreSQL role and database (default kvmpanel)
#   --listen ADDRESS     where nginx listens (default: every IPv4 and IPv6 address)
#   --https-port N, --http-port N            nginx's ports (443, 80)
#   --web-port N, --console-port N, --redis-port N
#                        the panel's own loopback ports (8000, 6080, 6380)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
shopt -u patsub_replacement 2>/dev/null || true # "&" in a value stays "&" in templates

TEMPLATES="$ROOT/deploy"
INSTALL_PACKAGES=(postgresql nginx openssl rsync)
# What install.conf remembers between runs.
REMEMBERED=(DOMAIN CERT KEY LOCAL_NODE USER_NAME LISTEN HTTPS_PORT HTTP_PORT WEB_PORT CONSOLE_PORT REDIS_PORT)
# The settings this script owns in the environment file (the others are the operator's).
OWNED_SETTINGS=(
  DJANGO_SETTINGS_MODULE DEBUG HTTPS ALLOWED_HOSTS CSRF_TRUSTED_ORIGINS KVMPANEL_CONSOLE_URL KVMPANEL_CONSOLE_BIND
  KVMPANEL_CONSOLE_PORT DATABASE_URL REDIS_URL KVMPANEL_VAR_DIR KVMPANEL_STATIC_ROOT KVMPANEL_BACKUP_DIR
)
PANEL_SERVICES=(kvmpanel-web kvmpanel-worker kvmpanel-beat kvmpanel-console kvmpanel-monitor)

CHANGES=()
SKIPPED=()
# Every change is counted and said; the services are restarted after it, even if this run stops first
# (the next run finds the mark).
changed() {
  CHANGES+=("$1")
  say "$1"
  [ ! -d "${STAMPS:-}" ] || touch "$STAMPS/restart-pending"
}
skipped() { SKIPPED+=("$1"); }
die() { echo "install.sh: $*" >&2; exit 2; }

# --- options -------------------------------------------------------------------------------------

declare -A GIVEN=()
parse_args() {
  while [ $# -gt 0 ]; do
    [[ $1 == --*=* ]] && set -- "${1%%=*}" "${1#*=}" "${@:2}" # --option=value
    case $1 in
      --domain) GIVEN[DOMAIN]=${2-}; shift ;;
      --cert) GIVEN[CERT]=${2-}; shift ;;
      --key) GIVEN[KEY]=${2-}; shift ;;
      --self-signed) GIVEN[CERT]=""; GIVEN[KEY]="" ;;
      --no-local-node) GIVEN[LOCAL_NODE]=no ;;
      --prefix) PREFIX=${2-}; shift ;;
      --user) GIVEN[USER_NAME]=${2-}; shift ;;
      --listen) GIVEN[LISTEN]=${2-}; shift ;;
      --https-port) GIVEN[HTTPS_PORT]=${2-}; shift ;;
      --http-port) GIVEN[HTTP_PORT]=${2-}; shift ;;
      --web-port) GIVEN[WEB_PORT]=${2-}; shift ;;
      --console-port) GIVEN[CONSOLE_PORT]=${2-}; shift ;;
      --redis-port) GIVEN[REDIS_PORT]=${2-}; shift ;;
      -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
      *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
  done
}

# The file paths of an install under $PREFIX ("" for a real one).
set_paths() {
  HOME_DIR="$PREFIX/opt/kvmpanel"
  APP="$HOME_DIR/app"
  APP_VENV="$HOME_DIR/venv"
  STATIC_ROOT="$HOME_DIR/static"
  MANAGE="$HOME_DIR/bin/kvmpanel-manage"
  ETC="$PREFIX/etc/kvmpanel"
  ENV_FILE="$ETC/kvmpanel.env"
  INSTALL_CONF="$ETC/install.conf"
  REDIS_CONF="$ETC/redis.conf"
  UNIT_DIR="$PREFIX/etc/systemd/system"
  NGINX_DIR="$PREFIX/etc/nginx"
  LOG_DIR="$PREFIX/var/log/nginx"
  STATE="$PREFIX/var/lib/kvmpanel"
  VAR_DIR="$STATE/panel"
  ACME_ROOT="$STATE/acme"
  REDIS_DIR="$STATE/redis"
  BACKUP_DIR="$PREFIX/var/backups/kvmpanel"
  STAMPS="$HOME_DIR/.stamps"
}

load_remembered() {
  local key value
  declare -gA OPT=([LOCAL_NODE]=yes [USER_NAME]=kvmpanel [LISTEN]="" [HTTPS_PORT]=443 [HTTP_PORT]=80
    [WEB_PORT]=8000 [CONSOLE_PORT]=6080 [REDIS_PORT]=6380 [DOMAIN]="" [CERT]="" [KEY]="")
  if [ -f "$INSTALL_CONF" ]; then
    while IFS='=' read -r key value; do
      [[ " ${REMEMBERED[*]} " == *" $key "* ]] && OPT[$key]=$value
    done <"$INSTALL_CONF"
  fi
  for key in "${!GIVEN[@]}"; do OPT[$key]=${GIVEN[$key]}; done
}

# Everything is checked before anything changes: bad input stops here.
validate() {
  local port
  [ -n "${OPT[DOMAIN]}" ] || die "--domain is required the first time (e.g. --domain panel.example.com)"
  [[ ${OPT[DOMAIN]} =~ ^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$ ]] ||
    die "--domain '${OPT[DOMAIN]}' is not a domain name (lower case, e.g. panel.example.com)"
  [[ ${OPT[USER_NAME]} =~ ^[a-z][a-z0-9_]{0,23}$ ]] ||
    die "--user '${OPT[USER_NAME]}' must be lower-case letters, digits and _ (24 at most)"
  for port in HTTPS_PORT HTTP_PORT WEB_PORT CONSOLE_PORT REDIS_PORT; do
    [[ ${OPT[$port]} =~ ^[1-9][0-9]{0,4}$ ]] && [ "${OPT[$port]}" -le 65535 ] ||
      die "--$(tr 'A-Z_' 'a-z-' <<<"${port}") '${OPT[$port]}' is not a port number"
  done
  [ -z "${OPT[LISTEN]}" ] || [[ ${OPT[LISTEN]} =~ ^[0-9a-fA-F.:]+$ ]] || die "--listen '${OPT[LISTEN]}' is not an address"
  [[ $PREFIX == "" || $PREFIX == /* ]] || die "--prefix must be an absolute path"
  safe_path --prefix "$PREFIX"
  validate_certificate
}

# Paths go into nginx's and systemd's files as they are: plain characters only.
safe_path() {
  [[ -z $2 || $2 =~ ^/[A-Za-z0-9._/@+-]*$ ]] || die "$1 '$2' must be an absolute path of letters, digits and ._/@+-"
}

validate_certificate() {
  local cert=${OPT[CERT]} key=${OPT[KEY]}
  [ -z "$cert$key" ] && return 0
  [ -n "$cert" ] && [ -n "$key" ] || die "--cert and --key go together"
  safe_path --cert "$cert"
  safe_path --key "$key"
  [ -r "$cert" ] || die "--cert $cert: no such file"
  [ -r "$key" ] || die "--key $key: no such file"
  openssl x509 -in "$cert" -noout 2>/dev/null || die "--cert $cert is not a PEM certificate"
  openssl pkey -in "$key" -noout 2>/dev/null || die "--key $key is not a PEM private key (without a passphrase)"
  [ "$(openssl x509 -in "$cert" -noout -pubkey)" = "$(openssl pkey -in "$key" -pubout)" ] ||
    die "--key $key is not the key of --cert $cert"
  openssl x509 -in "$cert" -noout -checkhost "${OPT[DOMAIN]}" | grep -q "does match" ||
    die "--cert $cert is not valid for ${OPT[DOMAIN]}"
  openssl x509 -in "$cert" -noout -checkend 0 >/dev/null || die "--cert $cert has expired"
}

# --- small helpers -------------------------------------------------------------------------------

# render TEMPLATE: the template with every @NAME@ replaced by ${V[NAME]}; a name without a value stops.
# Assign its output to a variable (text=$(render ...)), so that a stop stops the install.
declare -A V=()
render() {
  local text key
  text=$(<"$1")
  for key in "${!V[@]}"; do text=${text//@$key@/${V[$key]}}; done
  [[ $text =~ @[A-Z_]+@ ]] && die "template $1: ${BASH_REMATCH[0]} has no value"
  printf '%s\n' "$text"
}

# put_file PATH MODE OWNER:GROUP CONTENT: write it only when it differs; fix mode and owner.
# (Never at the end of a pipe: that runs in a subshell, where the change would not be counted.)
put_file() {
  local path=$1 mode=$2 owner=$3 tmp
  tmp=$(mktemp)
  printf '%s\n' "$4" >"$tmp"
  mkdir -p "$(dirname "$path")"
  if ! cmp -s "$tmp" "$path"; then
    install -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$tmp" "$path"
    changed "wrote $path"
  fi
  rm -f "$tmp"
  fix_mode "$path" "$mode" "$owner"
}

fix_mode() {
  local path=$1 mode=$2 owner=$3
  if [ "$(stat -c '%a %U:%G' "$path")" != "$mode $owner" ]; then
    chown "$owner" "$path"
    chmod "$mode" "$path"
    changed "set $path to $mode $owner"
  fi
}

# ensure_dir PATH MODE OWNER:GROUP
ensure_dir() {
  if [ ! -d "$1" ]; then
    mkdir -p "$1"
    changed "made $1"
  fi
  fix_mode "$@"
}

setting() { # setting KEY: its value in the environment file (quotes removed), or nothing
  [ -f "$ENV_FILE" ] || return 0
  sed -n "s/^$1=//p" "$ENV_FILE" | tail -n1 | sed -e "s/^'\(.*\)'\$/\1/"
}

# Run a command with the production settings in the environment (collectstatic, compileall, the dump).
with_settings() { (set -a && source "$ENV_FILE" && set +a && cd "$APP" && "$@"); }

as_postgres() { (cd / && runuser -u postgres -- "$@"); }

# --- the steps -----------------------------------------------------------------------------------

install_packages() {
  ensure_packages "${RUNTIME_PACKAGES[@]}" "${INSTALL_PACKAGES[@]}"
}

make_users() {
  local user=${OPT[USER_NAME]} redis_user="${OPT[USER_NAME]}-redis"
  if ! getent passwd "$user" >/dev/null; then
    useradd --system --user-group --home-dir "$VAR_DIR" --no-create-home --shell /usr/sbin/nologin \
      --comment "kvmpanel" "$user"
    changed "made the system user $user"
  fi
  # The worker, the serial console (web), the console bridge and the monitor speak to qemu:///system:
  # Debian's polkit rule (60-libvirt.rules) lets members of "libvirt" manage it, without a password.
  if getent group libvirt >/dev/null && ! id -nG "$user" | grep -qw libvirt; then
    usermod -aG libvirt "$user"
    changed "added $user to the libvirt group"
  fi
  if ! getent passwd "$redis_user" >/dev/null; then
    useradd --system --user-group --home-dir "$REDIS_DIR" --no-create-home --shell /usr/sbin/nologin \
      --comment "kvmpanel Redis" "$redis_user"
    changed "made the system user $redis_user"
  fi
}

make_directories() {
  local user=${OPT[USER_NAME]}
  ensure_dir "$HOME_DIR" 755 root:root
  ensure_dir "$HOME_DIR/bin" 755 root:root
  ensure_dir "$STAMPS" 700 root:root
  ensure_dir "$ETC" 755 root:root
  ensure_dir "$STATE" 755 root:root
  ensure_dir "$VAR_DIR" 750 "$user:$user"
  ensure_dir "$ACME_ROOT" 755 root:root
  ensure_dir "$REDIS_DIR" 750 "$user-redis:$user-redis"
  ensure_dir "$BACKUP_DIR" 700 "$user:$user"
  if [ -n "$PREFIX" ]; then # what Debian's nginx package makes, for a staged install's own nginx
    ensure_dir "$LOG_DIR" 755 root:root
    ensure_dir "$PREFIX/var/lib/nginx" 755 root:root
    ensure_dir "$PREFIX/run" 755 root:root
  fi
}

ensure_postgres_running() {
  pg_isready -q -h 127.0.0.1 -p 5432 && return 0
  if have_systemd; then
    systemctl enable --now postgresql
  else
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
  fi
  wait_for 30 pg_isready -q -h 127.0.0.1 -p 5432
}

make_database() {
  local name=${OPT[USER_NAME]} password
  password=$(sed -n 's|^postgres://[^:]*:\([^@]*\)@.*|\1|p' <<<"$(setting DATABASE_URL)")
  if [ -z "$(as_postgres psql -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$name'")" ]; then
    password=${password:-$(openssl rand -hex 24)}
    as_postgres psql -q -v ON_ERROR_STOP=1 <<<"CREATE ROLE $name LOGIN PASSWORD '$password';"
    changed "made the PostgreSQL role $name"
  elif [ -z "$password" ]; then # the settings were lost: a new password
    password=$(openssl rand -hex 24)
    as_postgres psql -q -v ON_ERROR_STOP=1 <<<"ALTER ROLE $name PASSWORD '$password';"
    changed "gave the PostgreSQL role $name a new password"
  fi
  if [ -z "$(as_postgres psql -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" ]; then
    as_postgres createdb --owner="$name" --encoding=UTF8 --template=template0 "$name"
    as_postgres psql -q -v ON_ERROR_STOP=1 <<<"REVOKE ALL ON DATABASE $name FROM PUBLIC;"
    changed "made the PostgreSQL database $name"
  fi
  V[DATABASE_URL]="postgres://$name:$password@127.0.0.1:5432/$name"
}

copy_code() {
  local excluded=(/.git /.venv /node_modules /var /staticfiles /test-output /tests /bench /.ci /run
    __pycache__ '*.pyc' .pytest_cache .ruff_cache) rules=() pattern copied
  for pattern in "${excluded[@]}"; do rules+=("--exclude=$pattern"); done
  ensure_node_modules
  # Owned by root, not writable by the panel's user; only what differs is copied, with its own times.
  local rsync=(rsync -a --omit-dir-times --delete --chown=root:root --chmod=go-w --itemize-changes)
  copied=$("${rsync[@]}" "${rules[@]}" "$ROOT/" "$APP/")
  # node_modules may be a link to a shared folder: its files are copied (collectstatic reads them).
  copied+=$("${rsync[@]}" "$ROOT/node_modules/" "$APP/node_modules/")
  [ -z "$copied" ] || changed "copied the code to $APP ($(wc -l <<<"$copied") files and folders)"
  local before
  before=$(cat "$APP_VENV/.requirements.sha256" 2>/dev/null || true)
  ensure_python_env "$APP_VENV" "$APP/requirements.txt"
  [ "$before" = "$(cat "$APP_VENV/.requirements.sha256")" ] || changed "installed the Python packages in $APP_VENV"
}

# A fingerprint of the code and its packages: collectstatic and the byte-code are made again when it changes.
code_stamp() {
  {
    (cd "$APP" && find . -type f ! -path '*/__pycache__/*' -printf '%P %s %T@\n' | LC_ALL=C sort)
    cat "$APP_VENV/.requirements.sha256"
  } | sha256sum | cut -d' ' -f1
}

# stamped NAME VALUE COMMAND...: run COMMAND unless its last successful run had the same VALUE
# (then RAN is empty).
stamped() {
  local name=$1 value=$2
  shift 2
  RAN=""
  [ "$(cat "$STAMPS/$name" 2>/dev/null)" = "$value" ] && return 0
  "$@"
  echo "$value" >"$STAMPS/$name"
  RAN=yes
}

build_code() {
  local stamp
  stamp=$(code_stamp)
  stamped collectstatic "$stamp" with_settings "$APP_VENV/bin/python" manage.py collectstatic --noinput -v 0
  [ -z "$RAN" ] || changed "collected the static files in $STATIC_ROOT"
  stamped compileall "$stamp" "$APP_VENV/bin/python" -m compileall -q -x /node_modules/ "$APP"
  [ -z "$RAN" ] || changed "compiled the code"
}

write_settings() {
  local user=${OPT[USER_NAME]} suffix=${V[PORT_SUFFIX]} redis_password secret key
  redis_password=$(sed -n 's/^requirepass //p' "$REDIS_CONF" 2>/dev/null || true)
  V[REDIS_PASSWORD]=${redis_password:-$(openssl rand -hex 24)}
  V[REDIS_URL]="redis://:${V[REDIS_PASSWORD]}@127.0.0.1:${OPT[REDIS_PORT]}/0"
  V[ALLOWED_HOSTS]=${OPT[DOMAIN]}
  V[CSRF_TRUSTED_ORIGINS]="https://${OPT[DOMAIN]}$suffix"
  V[KVMPANEL_CONSOLE_URL]="wss://${OPT[DOMAIN]}$suffix/console-ws/"
  V[KVMPANEL_CONSOLE_PORT]=${OPT[CONSOLE_PORT]}
  V[KVMPANEL_VAR_DIR]=$VAR_DIR
  V[KVMPANEL_STATIC_ROOT]=$STATIC_ROOT
  V[KVMPANEL_BACKUP_DIR]=$BACKUP_DIR
  secret=$(setting SECRET_KEY)
  V[SECRET_KEY]=${secret:-$(openssl rand -hex 32)}

  local text
  text=$(render "$TEMPLATES/redis.conf")
  put_file "$REDIS_CONF" 640 "root:$user-redis" "$text"
  if [ ! -f "$ENV_FILE" ]; then
    text=$(render "$TEMPLATES/kvmpanel.env")
    put_file "$ENV_FILE" 640 "root:$user" "$text"
    return
  fi
  # Kept as the operator left it, but for the settings this script owns (and a missing secret).
  text=$(<"$ENV_FILE")
  for key in "${OWNED_SETTINGS[@]}" SECRET_KEY; do
    local want
    case $key in
      DJANGO_SETTINGS_MODULE) want=kvmpanel.settings ;;
      DEBUG) want=0 ;;
      HTTPS) want=1 ;;
      KVMPANEL_CONSOLE_BIND) want=127.0.0.1 ;;
      *) want=${V[$key]} ;;
    esac
    if grep -q "^$key=" <<<"$text"; then
      text=$(awk -v key="$key" -v line="$key=$want" 'index($0, key "=") == 1 { $0 = line } { print }' <<<"$text")
    else
      text+=$'\n'"$key=$want"
    fi
  done
  put_file "$ENV_FILE" 640 "root:$user" "$text"
}

write_certificate() {
  if [ -n "${OPT[CERT]}" ]; then
    V[CERT]=${OPT[CERT]} V[KEY]=${OPT[KEY]}
    return
  fi
  local dir="$ETC/tls"
  V[CERT]="$dir/selfsigned.crt" V[KEY]="$dir/selfsigned.key"
  ensure_dir "$dir" 700 root:root
  if [ -f "${V[KEY]}" ] && openssl x509 -in "${V[CERT]}" -noout -checkend 2592000 >/dev/null 2>&1 &&
    openssl x509 -in "${V[CERT]}" -noout -checkhost "${OPT[DOMAIN]}" | grep -q "does match"; then
    return
  fi
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
    -subj "/CN=${OPT[DOMAIN]}" -addext "subjectAltName=DNS:${OPT[DOMAIN]}" \
    -keyout "${V[KEY]}" -out "${V[CERT]}" 2>/dev/null
  chmod 600 "${V[KEY]}"
  changed "made a self-signed certificate for ${OPT[DOMAIN]} (valid 825 days)"
}

# The panel's own SSH key pair for qemu+ssh nodes (its public half goes in each node's authorized_keys;
# the node page shows it). Made once, like the other secrets; never overwritten.
write_ssh_key() {
  local user=${OPT[USER_NAME]} dir="$VAR_DIR/ssh"
  ensure_dir "$dir" 700 "$user:$user"
  if [ ! -f "$dir/id_ed25519" ]; then
    ssh-keygen -q -t ed25519 -N "" -C "kvmpanel@${OPT[DOMAIN]}" -f "$dir/id_ed25519"
    chown "$user:$user" "$dir/id_ed25519" "$dir/id_ed25519.pub"
    changed "made the panel's SSH key pair for remote nodes ($dir/id_ed25519.pub)"
  fi
}

write_units() {
  local unit text
  V[SANDBOX]=$(render "$TEMPLATES/systemd/sandbox.conf")
  V[PANEL_PROCESS]=$(render "$TEMPLATES/systemd/panel-process.conf")
  for unit in "$TEMPLATES"/systemd/kvmpanel*; do
    text=$(render "$unit")
    put_file "$UNIT_DIR/$(basename "$unit")" 644 root:root "$text"
  done
}

# systemd's own check of every unit: syntax, known settings, executables that exist.
verify_units() {
  local output
  output=$(systemd-analyze verify "$UNIT_DIR"/kvmpanel*.service "$UNIT_DIR"/kvmpanel*.timer \
    "$UNIT_DIR"/kvmpanel.target 2>&1) || die "systemd-analyze verify failed: $output"
  [ -z "$output" ] || die "systemd-analyze verify: $output"
}

write_nginx_site() {
  local site="$NGINX_DIR/sites-available/kvmpanel.conf" listen address image_gb
  image_gb=$(setting KVMPANEL_IMAGE_MAX_GB)
  V[UPLOAD_MAX]="$((${image_gb:-20} * 1024 + 16))m"
  for listen in HTTP HTTPS; do
    local port=${OPT[${listen}_PORT]} ssl=""
    [ $listen = HTTPS ] && ssl=" ssl http2"
    if [ -n "${OPT[LISTEN]}" ]; then
      address=${OPT[LISTEN]}
      [[ $address == *:* ]] && address="[$address]"
      V[${listen}_LISTEN]="    listen $address:$port$ssl;"
    else
      V[${listen}_LISTEN]="    listen $port$ssl;"$'\n'"    listen [::]:$port$ssl;"
    fi
  done
  local text
  text=$(render "$TEMPLATES/nginx/kvmpanel.conf")
  put_file "$site" 644 root:root "$text"
  if [ "$(readlink "$NGINX_DIR/sites-enabled/kvmpanel.conf" 2>/dev/null)" != "$site" ]; then
    mkdir -p "$NGINX_DIR/sites-enabled"
    ln -sfn "$site" "$NGINX_DIR/sites-enabled/kvmpanel.conf"
    changed "enabled the nginx site"
  fi
  if [ -n "$PREFIX" ]; then # nginx's main file, as Debian's would include the site (for the tests)
    text=$(render "$TEMPLATES/nginx/staged-nginx.conf")
    put_file "$NGINX_DIR/nginx.conf" 644 root:root "$text"
    local output
    output=$(nginx -t -q -p "$PREFIX/" -c "$NGINX_DIR/nginx.conf" 2>&1) || die "nginx -t: $output"
  else
    local output
    output=$(nginx -t -q 2>&1) || die "nginx -t (the site is in $site): $output"
  fi
}

write_manage_command() {
  local text
  text=$(render "$TEMPLATES/kvmpanel-manage")
  put_file "$MANAGE" 755 root:root "$text"
  if [ -z "$PREFIX" ] && [ "$(readlink /usr/local/sbin/kvmpanel-manage)" != "$MANAGE" ]; then
    ln -sfn "$MANAGE" /usr/local/sbin/kvmpanel-manage
    changed "linked /usr/local/sbin/kvmpanel-manage"
  fi
}

# New migrations: a dump first (the way back), then the migrations; nothing new: nothing happens.
migrate() {
  "$MANAGE" migrate --check >/dev/null 2>&1 && return 0
  local tables
  tables=$(with_settings psql "$(setting DATABASE_URL)" -tAc "SELECT to_regclass('django_migrations') IS NOT NULL")
  if [ "$tables" = t ]; then
    with_settings runuser -u "${OPT[USER_NAME]}" -- bash "$APP/scripts/backup-db.sh" pre-upgrade
    changed "dumped the database before the upgrade (in $BACKUP_DIR)"
  fi
  "$MANAGE" migrate --noinput
  changed "applied the new migrations"
}

# The first admin (its password printed once) and this machine as a node; once, and again when asked
# for the local node later.
bootstrap() {
  local options=(--no-demo-plans)
  [ "${OPT[LOCAL_NODE]}" = yes ] || options+=(--no-local-node)
  stamped bootstrap "${options[*]}" "$MANAGE" bootstrap_panel "${options[@]}"
  [ -z "$RAN" ] || changed "bootstrapped the panel"
}

# Django's own production checks, with these settings (again when the code or the settings change;
# a check changes nothing).
check_deploy() {
  stamped check-deploy "$(code_stamp)-$(sha256sum <"$ENV_FILE")" \
    "$MANAGE" check --deploy --fail-level WARNING -v 0
}

# Start (or restart what changed) under systemd; say what was left when there is no systemd here.
start_services() {
  if [ -n "$PREFIX" ]; then
    skipped "staged install under $PREFIX: systemd and the system's nginx were left alone"
    return
  fi
  if ! have_systemd; then
    skipped "systemd is not running here (PID 1 is $(ps -o comm= -p 1)): the units are written and verified but not enabled or started; nginx was not reloaded"
    return
  fi
  systemctl daemon-reload
  systemctl enable --quiet kvmpanel.target nginx
  if [ -e "$STAMPS/restart-pending" ]; then
    systemctl restart kvmpanel-redis "${PANEL_SERVICES[@]}"
    systemctl reload-or-restart nginx
    rm "$STAMPS/restart-pending"
  fi
  systemctl start kvmpanel.target nginx
}

remember_options() {
  local key text=""
  for key in "${REMEMBERED[@]}"; do text+="$key=${OPT[$key]}"$'\n'; done
  put_file "$INSTALL_CONF" 644 root:root "${text%$'\n'}"
}

main() {
  PREFIX=""
  parse_args "$@"
  require_root
  set_paths
  load_remembered
  validate
  local started=$SECONDS
  local suffix=""
  [ "${OPT[HTTPS_PORT]}" = 443 ] || suffix=":${OPT[HTTPS_PORT]}"
  V+=([DOMAIN]=${OPT[DOMAIN]} [PORT_SUFFIX]=$suffix [USER]=${OPT[USER_NAME]} [REDIS_USER]="${OPT[USER_NAME]}-redis"
    [PREFIX]=$PREFIX [APP]=$APP [VENV]=$APP_VENV [ENV_FILE]=$ENV_FILE [VAR_DIR]=$VAR_DIR
    [REDIS_DIR]=$REDIS_DIR [REDIS_CONF]=$REDIS_CONF [REDIS_PORT]=${OPT[REDIS_PORT]} [BACKUP_DIR]=$BACKUP_DIR
    [STATIC_ROOT]=$STATIC_ROOT [ACME_ROOT]=$ACME_ROOT [LOG_DIR]=$LOG_DIR [WEB_PORT]=${OPT[WEB_PORT]}
    [CONSOLE_PORT]=${OPT[CONSOLE_PORT]})

  install_packages
  make_users
  make_directories
  remember_options # a run that stops half-way is finished by running the command again, without options
  ensure_postgres_running
  make_database
  write_settings
  write_manage_command
  copy_code
  build_code
  write_certificate
  write_ssh_key
  write_units
  verify_units
  write_nginx_site
  if [ -z "$PREFIX" ] && have_systemd; then systemctl daemon-reload && systemctl start kvmpanel-redis; fi
  migrate
  if [ "${OPT[LOCAL_NODE]}" = yes ] && [ -z "$PREFIX" ]; then ensure_libvirt; fi # this machine as a node
  bootstrap
  check_deploy
  start_services

  local took=$((SECONDS - started)) item
  for item in "${SKIPPED[@]}"; do say "Skipped: $item"; done
  if [ ${#CHANGES[@]} -eq 0 ]; then
    say "kvmpanel is up to date: nothing changed (${took} s)"
  else
    say "kvmpanel installed: ${#CHANGES[@]} changes in ${took} s; https://${OPT[DOMAIN]}$suffix/"
  fi
}

main "$@"
