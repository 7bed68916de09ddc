#!/bin/sh
# backup.sh DIR: a pg_dump (custom format: compressed, restorable table by table) of the database the libpq
# variables name (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE), as DIR/<database>-<UTC time>.dump; keeps the
# newest BACKUP_RETAIN dumps (default 7). Run by the chart's backup CronJob (the TimescaleDB image's pg_dump) and by
# tests/deploy/test_backup.py against the local PostgreSQL. Restore with restore.sh beside it.
set -eu
dir=${1:?usage: backup.sh DIR}
retain=${BACKUP_RETAIN:-7}
database=${PGDATABASE:?set PGDATABASE (and PGHOST, PGPORT, PGUSER, PGPASSWORD)}
target="$dir/$database-$(date -u +%Y%m%dT%H%M%SZ).dump"
# Written under a temporary name and checked before it takes the real one: a dump that was cut off never looks
# like a backup, and a failed run leaves nothing behind.
trap 'rm -f -- "$target.partial"' EXIT
pg_dump --format=custom --file="$target.partial" "$database"
pg_restore --list "$target.partial" > /dev/null
mv -- "$target.partial" "$target"
echo "backup: $target ($(wc -c < "$target") bytes)"
# The names sort by time: everything after the newest $retain goes.
find "$dir" -maxdepth 1 -name "$database-*.dump" | sort -r | tail -n "+$((retain + 1))" | while IFS= read -r old; do
  rm -f -- "$old"
  echo "backup: removed $old (BACKUP_RETAIN=$retain)"
done
