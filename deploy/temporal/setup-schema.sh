#!/bin/sh
# One-shot job run by the `temporal-schema` service (image temporalio/admin-tools).
#
# Creates Temporal's two PostgreSQL databases and brings both schemas up to the version
# shipped in this admin-tools release: the steps the deprecated auto-setup image used to
# run inside the server container. Safe to re-run: it runs on every `docker compose up`,
# and after bumping TEMPORAL_VERSION/TEMPORAL_ADMINTOOLS_VERSION it performs the upgrade.
#
# Environment (set in docker-compose.yml):
#   POSTGRES_SEEDS, POSTGRES_USER, SQL_PASSWORD (read by temporal-sql-tool itself),
#   DB_PORT, DB_PLUGIN, DBNAME, VISIBILITY_DBNAME, TEMPORAL_SCHEMA_ROOT
set -eu

: "${POSTGRES_SEEDS:?POSTGRES_SEEDS is required}"
: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${SQL_PASSWORD:?SQL_PASSWORD is required}"
DB_PORT="${DB_PORT:-5432}"
DB_PLUGIN="${DB_PLUGIN:-postgres12}"
DBNAME="${DBNAME:-temporal}"
VISIBILITY_DBNAME="${VISIBILITY_DBNAME:-temporal_visibility}"
SCHEMA_ROOT="${TEMPORAL_SCHEMA_ROOT:-/etc/temporal/schema/postgresql/v12}"
export SQL_PASSWORD

log() { echo "temporal-schema: $*"; }

sql_tool() {
    db="$1"
    shift
    temporal-sql-tool --plugin "$DB_PLUGIN" --ep "$POSTGRES_SEEDS" -p "$DB_PORT" \
        -u "$POSTGRES_USER" --db "$db" "$@"
}

setup_database() {
    db="$1"
    schema_dir="$2"
    log "database $db (schema $schema_dir)"
    # create-database is not idempotent on PostgreSQL: it fails once the database exists,
    # i.e. on every run after the first. That is fine: setup-schema connects to the
    # database next and fails loudly if it really is missing or unreachable.
    if ! sql_tool "$db" create-database; then
        log "create-database $db failed (already exists?); continuing"
    fi
    # Records version 0.0 only when no newer version is recorded (idempotent).
    sql_tool "$db" setup-schema -v 0.0
    # Applies only the versioned scripts newer than the recorded version.
    sql_tool "$db" update-schema -d "$schema_dir"
}

setup_database "$DBNAME" "$SCHEMA_ROOT/temporal/versioned"
setup_database "$VISIBILITY_DBNAME" "$SCHEMA_ROOT/visibility/versioned"
log "done"
