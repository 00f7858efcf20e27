#!/bin/sh
# One-shot (temporalio/admin-tools): create and migrate Temporal's two databases on PostgreSQL.
# Safe to run again: an existing database or version table is reported, and update-schema only
# applies versions not applied yet, so a real failure still fails this container.
set -eu

for db in temporal temporal_visibility; do
  case "$db" in
    temporal) dir=/etc/temporal/schema/postgresql/v12/temporal/versioned ;;
    *) dir=/etc/temporal/schema/postgresql/v12/visibility/versioned ;;
  esac
  sql() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" \
      -u "$POSTGRES_USER" --pw "$POSTGRES_PWD" --db "$db" "$@"
  }
  sql create || echo "database $db already exists"
  sql setup-schema -v 0.0 || echo "database $db already has its version table"
  sql update-schema -d "$dir"
  echo "database $db is up to date"
done
