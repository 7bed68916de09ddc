#!/bin/sh
# restore.sh DUMP DATABASE: restores a dump of backup.sh into DATABASE, a new database it creates (it refuses one
# that exists), on the server the libpq variables name (PGHOST, PGPORT, PGUSER, PGPASSWORD). With TimescaleDB in the
# dump it follows Timescale's procedure: the extension first, timescaledb_pre_restore(), pg_restore,
# timescaledb_post_restore(). The roles the dump grants to (tickpipe_writer, tickpipe_reader: the migrator's) must
# exist on that server. k8s/README.md ("Backup and restore") says how to swap the restored database in.
set -eu
dump=${1:?usage: restore.sh DUMP DATABASE}
database=${2:?usage: restore.sh DUMP DATABASE}
[ -r "$dump" ] || { echo "restore: cannot read $dump" >&2; exit 2; }
pg_restore --list "$dump" > /dev/null || { echo "restore: $dump is not a pg_dump archive" >&2; exit 2; }
# The name goes in as a psql variable (quoted by psql), never into the SQL text.
exists=$(echo "SELECT 1 FROM pg_database WHERE datname = :'name'" |
  psql --dbname=postgres --no-psqlrc --tuples-only --no-align --set=ON_ERROR_STOP=1 --set=name="$database")
if [ -n "$exists" ]; then
  echo "restore: database $database exists; restore into a new one (then swap the names)" >&2
  exit 2
fi
createdb "$database"
timescale=no
if pg_restore --list "$dump" | grep -q ' EXTENSION - timescaledb$'; then
  timescale=yes
  psql --dbname="$database" --no-psqlrc --set=ON_ERROR_STOP=1 --quiet \
    --command="CREATE EXTENSION IF NOT EXISTS timescaledb" --command="SELECT timescaledb_pre_restore()"
fi
pg_restore --exit-on-error --no-owner --dbname="$database" "$dump"
if [ "$timescale" = yes ]; then
  psql --dbname="$database" --no-psqlrc --set=ON_ERROR_STOP=1 --quiet --command="SELECT timescaledb_post_restore()"
fi
echo "restore: $dump -> $database (TimescaleDB: $timescale)"
