#!/usr/bin/env bash
# One dump of the panel's PostgreSQL database into $KVMPANEL_BACKUP_DIR, keeping the newest
# $KVMPANEL_BACKUP_KEEP (kvmpanel-backup.service runs it nightly, as the panel's user, with the
# production settings). A dump counts only once it is complete and readable: it is written under a
# temporary name, listed with pg_restore, and only then given its final name.
#
#   backup-db.sh [NAME-PREFIX]   default "kvmpanel"; scripts/install.sh uses "pre-upgrade"
#                                before it applies new migrations (those are not rotated)
set -euo pipefail

prefix=${1:-kvmpanel}
dir=${KVMPANEL_BACKUP_DIR:?KVMPANEL_BACKUP_DIR is not set (see the production settings)}
keep=${KVMPANEL_BACKUP_KEEP:-14}
[[ $keep =~ ^[1-9][0-9]*$ ]] || { echo "KVMPANEL_BACKUP_KEEP must be a number above 0, not '$keep'" >&2; exit 2; }
[[ $prefix =~ ^[a-z][a-z-]*$ ]] || { echo "bad name prefix '$prefix'" >&2; exit 2; }

name="$prefix-$(date -u +%Y%m%dT%H%M%SZ).dump"
partial="$dir/.$name.partial"
trap 'rm -f "$partial"' EXIT
pg_dump --format=custom --file="$partial" --dbname="${DATABASE_URL:?DATABASE_URL is not set}"
pg_restore --list "$partial" >/dev/null
mv "$partial" "$dir/$name"
echo "database dumped to $dir/$name ($(stat -c %s "$dir/$name") bytes)"

if [ "$prefix" = kvmpanel ]; then
  # Newest first; everything after the first $keep goes.
  find "$dir" -maxdepth 1 -name 'kvmpanel-*.dump' -printf '%f\n' | sort -r | tail -n +"$((keep + 1))" |
    while read -r old; do
      rm -f -- "${dir:?}/$old"
      echo "removed the old dump $old"
    done
fi
