#!/bin/sh
# Managed by Salt (pgcluster formula). Patroni's create_replica_method `clone_source`: the
# standby leader of a physical migration copies the source with pg_basebackup. The source's own
# configuration must not come along: a Debian source keeps postgresql.conf in /etc (Patroni then
# fails renaming the missing file to postgresql.base.conf, patroni#2337), and its
# postgresql.auto.conf holds its ALTER SYSTEM settings (e.g. TLS files lent for the migration),
# which would override Patroni's. Both are kept beside, renamed *.source; empty ones in place.
# Patroni calls it with --scope, --role, --datadir, --connstring (the password: PGPASSFILE) and
# the method's own keys: --max_rate (migrate:copy_max_rate: the copy's limit on the source).
set -eu
datadir="" connstring="" rate=""
for arg in "$@"; do
    case "$arg" in
        --datadir=*) datadir="${arg#--datadir=}" ;;
        --connstring=*) connstring="${arg#--connstring=}" ;;
        --max_rate=*) rate="--max-rate=${arg#--max_rate=}" ;;
    esac
done
if [ -z "$datadir" ] || [ -z "$connstring" ]; then
    echo "pgcluster-clone-source: --datadir= and --connstring= are required" >&2
    exit 2
fi
# shellcheck disable=SC2086 # $rate: one word or none
pg_basebackup --pgdata="$datadir" --dbname="$connstring" --wal-method=stream --checkpoint=fast $rate
for conf in postgresql.conf postgresql.auto.conf; do
    if [ -e "$datadir/$conf" ]; then
        mv "$datadir/$conf" "$datadir/$conf.source"
    fi
    : >"$datadir/$conf"
done
