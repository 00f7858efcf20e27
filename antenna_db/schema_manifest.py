"""The manifest of Antenna's schema as antenna-jobs uses it (``antenna_db/schema_manifest.json``):
every column (name, type, nullability, default) of every Antenna table antenna-jobs reads or
writes, and which of those tables it inserts rows into.

Generated, never edited by hand, from Antenna's schema dump (``../shared/antenna/schema.sql``,
copied to ``tests/fixtures/antenna/schema.sql``): the dump is loaded into a scratch schema of a
live PostgreSQL and read back from the catalogs with the same query the start-up check runs on
Antenna's database (antenna_db/schema_check.py), so both sides speak PostgreSQL's own type names.
``tests/unit/test_schema_manifest_usage.py`` and ``tests/integration/test_schema_check.py`` fail
when the committed file no longer matches what this generator makes of the fixture, or when our
SQL names an Antenna table the manifest lacks. Regenerate with ``make schema-manifest``
(``antenna-jobs db manifest --schema-sql PATH --out antenna_db/schema_manifest.json``).

Every column of a used table is in the manifest, not only those our SQL names: a column we do
not name that is dropped or retyped is also reported (conservative; the operator then upgrades
antenna-jobs with a regenerated manifest).
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

MANIFEST_NAME = "schema_manifest.json"
SOURCE = "../shared/antenna/schema.sql, committed as tests/fixtures/antenna/schema.sql"

# The tables our INSERTs write (antenna_db/seed.py's demo rows aside). Antenna's columns have no
# database defaults, so every NOT NULL column of these in the manifest is one we write; a new
# NOT NULL column without a default is one we do not.
INSERTED_TABLES = frozenset(
    {
        "auth_group",
        "authtoken_token",
        "exports_dataexport",
        "guardian_groupobjectpermission",
        "jobs_job",
        "jobs_joblog",
        "main_classification",
        "main_detection",
        "main_occurrence",
        "main_sourceimagecollection_images",
        "main_taxalist",
        "main_taxalist_taxa",
        "main_taxon",
        "main_userprojectmembership",
        "ml_algorithm",
        "ml_algorithmcategorymap",
        "ml_pipeline",
        "ml_pipeline_algorithms",
        "ml_processingservice",
        "ml_processingservice_pipelines",
        "ml_processingservice_projects",
        "ml_projectpipelineconfig",
        "users_user",
        "users_user_groups",
    }
)

# Antenna tables antenna-jobs reads or writes (the inserted ones and these, which it only reads
# or updates), in name order: exactly the ones antenna_db/standalone creates on a bare database.
USED_TABLES = tuple(
    sorted(
        INSERTED_TABLES
        | {
            "auth_group_permissions",
            "auth_permission",
            "django_content_type",
            "guardian_userobjectpermission",
            "main_deployment",
            "main_device",
            "main_event",
            "main_identification",
            "main_project",
            "main_project_default_filters_exclude_taxa",
            "main_project_default_filters_include_taxa",
            "main_s3storagesource",
            "main_site",
            "main_sourceimage",
            "main_sourceimagecollection",
        }
    )
)

# One row per column of the named tables of one schema. An identity column's default is shown
# as "identity", a generated column's as "generated".
COLUMNS_SQL = """
SELECT c.relname AS table, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       NOT a.attnotnull AS nullable,
       CASE WHEN a.attidentity <> '' THEN 'identity'
            WHEN a.attgenerated <> '' THEN 'generated'
            ELSE pg_get_expr(d.adbin, d.adrelid) END AS default
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)
ORDER BY c.relname, a.attnum
"""


def read_columns(
    conn: psycopg.Connection[Any], schema: str, tables: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """table -> its columns in order, each {name, type, nullable, default} (sync, for tools)."""
    found: dict[str, list[dict[str, Any]]] = {}
    with conn.cursor() as cur:
        cur.execute(COLUMNS_SQL, (schema, tables))
        for table, name, typ, nullable, default in cur.fetchall():
            found.setdefault(table, []).append(
                {"name": name, "type": typ, "nullable": nullable, "default": default}
            )
    return found


def build(conn: psycopg.Connection[Any], schema_sql: str, source: str) -> dict[str, Any]:
    """The manifest of ``schema_sql`` (loaded into a scratch schema, dropped afterwards)."""
    scratch = f"aj_manifest_{uuid.uuid4().hex[:10]}"
    conn.autocommit = True
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(scratch)))
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(scratch))
            )
            conn.execute(schema_sql.encode())
        columns = read_columns(conn, scratch, list(USED_TABLES))
    finally:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(scratch)))
    missing = [t for t in USED_TABLES if t not in columns]
    if missing:
        raise ValueError(f"{source} lacks tables antenna-jobs uses: {', '.join(missing)}")
    return {
        "source": source,
        "source_sha256": hashlib.sha256(schema_sql.encode()).hexdigest(),
        "regenerate": "make schema-manifest",
        "tables": {
            table: {"inserted": table in INSERTED_TABLES, "columns": columns[table]}
            for table in sorted(USED_TABLES)
        },
    }


def dumps(manifest: dict[str, Any]) -> str:
    """JSON with one line per column, so a regenerated manifest diffs column by column."""
    head = {k: v for k, v in manifest.items() if k != "tables"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    lines.append(' "tables": {')
    tables = list(manifest["tables"].items())
    for i, (table, spec) in enumerate(tables):
        lines.append(f"  {json.dumps(table)}: {{")
        lines.append(f'   "inserted": {json.dumps(spec["inserted"])},')
        lines.append('   "columns": [')
        cols = spec["columns"]
        lines += [
            f"    {json.dumps(c)}" + ("," if j < len(cols) - 1 else "") for j, c in enumerate(cols)
        ]
        lines.append("   ]")
        lines.append("  }" + ("," if i < len(tables) - 1 else ""))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


def generate(url: str, schema_sql: Path) -> str:
    """The manifest file's text for the dump at ``schema_sql`` (whichever copy of it: the
    manifest names the dump and records its sha256)."""
    with psycopg.connect(url) as conn:
        return dumps(build(conn, schema_sql.read_text(), SOURCE))


@functools.cache
def load() -> dict[str, Any]:
    """The committed manifest (shipped with the package; read once per process)."""
    loaded: dict[str, Any] = json.loads((resources.files("antenna_db") / MANIFEST_NAME).read_text())
    return loaded
