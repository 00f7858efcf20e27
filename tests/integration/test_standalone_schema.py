"""The Antenna tables that ``antenna_db/standalone`` creates have the shape of Antenna's own.

Antenna's schema dump (tests/fixtures/antenna/schema.sql + reference-rows.sql) is loaded into one
fresh schema and our 0001 + 0002 into another; both are then read back from the catalogs and
compared table by table: columns (position, type, nullability, identity, defaults), primary key,
unique constraints, foreign keys, CHECK constraints and indexes (key columns or expressions,
uniqueness, access method, opclasses, sort order, predicate; names may differ). A mismatch fails
with a unified diff per table and aspect, reference side first.
"""

from __future__ import annotations

import difflib
import re
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from antenna_db.schema_manifest import USED_TABLES
from core.settings import DatabaseSettings

FIXTURES = Path(__file__).parent.parent / "fixtures" / "antenna"
# Its fixtures connect to the PostgreSQL of the default settings (tests/helpers/fast.py).
pytestmark = pytest.mark.services

# The tables antenna-jobs uses: the schema manifest names them.
TABLES = list(USED_TABLES)

# Created by Antenna with the first project, so absent from reference-rows.sql.
FIRST_PROJECT_CODENAMES = {"delete_occurrences", "update_project", "import_data"}
JOB_CODENAMES = {
    "run_ml_job",
    "create_projectpipelineconfig",
    "run_populate_captures_collection_job",
    "run_data_export_job",
    "run_single_image_ml_job",
}

FK_ACTIONS = {
    "a": "NO ACTION",
    "r": "RESTRICT",
    "c": "CASCADE",
    "n": "SET NULL",
    "d": "SET DEFAULT",
}
FK_MATCH = {"s": "SIMPLE", "f": "FULL", "p": "PARTIAL"}

COLUMNS_SQL = """
SELECT c.relname, a.attname, row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
       format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity, a.attgenerated,
       pg_get_expr(d.adbin, d.adrelid),
       CASE WHEN a.attcollation <> t.typcollation THEN coll.collname END,
       format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
       s.seqcache, s.seqcycle
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_collation coll ON coll.oid = a.attcollation
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
LEFT JOIN (pg_depend dep JOIN pg_sequence s ON s.seqrelid = dep.objid)
    ON dep.refobjid = c.oid AND dep.refobjsubid = a.attnum
    AND dep.classid = 'pg_class'::regclass AND dep.deptype IN ('a', 'i')
WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
ORDER BY c.relname, a.attnum
"""

CONSTRAINTS_SQL = """
SELECT c.relname, con.contype,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k (num, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num
             ORDER BY k.ord)::text[],
       fc.relname, fn.nspname = n.nspname,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k (num, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num
             ORDER BY k.ord)::text[],
       con.condeferrable, con.condeferred, con.confdeltype, con.confupdtype, con.confmatchtype,
       pg_get_constraintdef(con.oid)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class fc ON fc.oid = con.confrelid
LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace
WHERE n.nspname = %s
"""

INDEXES_SQL = """
SELECT c.relname, am.amname, i.indisunique, i.indnullsnotdistinct,
       con.contype, pg_get_expr(i.indpred, i.indrelid),
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true)
             FROM generate_series(1, i.indnkeyatts) k ORDER BY k),
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true)
             FROM generate_series(i.indnkeyatts + 1, i.indnatts) k ORDER BY k),
       ARRAY(SELECT opn.nspname || '.' || op.opcname FROM generate_series(1, i.indnkeyatts) k
             JOIN pg_opclass op ON op.oid = i.indclass[k - 1]
             JOIN pg_namespace opn ON opn.oid = op.opcnamespace ORDER BY k),
       ARRAY(SELECT i.indoption[k - 1] FROM generate_series(1, i.indnkeyatts) k ORDER BY k),
       ARRAY(SELECT coalesce(co.collname, '') FROM generate_series(1, i.indnkeyatts) k
             LEFT JOIN pg_collation co ON co.oid = i.indcollation[k - 1] ORDER BY k)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
    AND con.contype IN ('p', 'u', 'x')
WHERE n.nspname = %s
"""

Shape = dict[str, dict[str, list[str]]]  # table -> aspect -> lines


def _url() -> str:
    return DatabaseSettings().url


def _standalone(name: str) -> str:
    return (resources.files("antenna_db.standalone") / name).read_text()


def _run_scripts(schema: str, *scripts: str) -> None:
    """Each script in its own transaction, with ``search_path`` = schema, public."""
    with psycopg.connect(_url()) as conn:
        conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
        for script in scripts:
            conn.execute(script.encode())
            conn.commit()


def _key_order(option: int) -> str:
    """pg_index.indoption bits (1 = DESC, 2 = NULLS FIRST), shown where not the default."""
    desc, nulls_first = bool(option & 1), bool(option & 2)
    order = " DESC" if desc else ""
    return order + ("" if nulls_first == desc else " NULLS FIRST" if nulls_first else " NULLS LAST")


def describe(conn: psycopg.Connection[Any], schema: str) -> Shape:
    shape: Shape = {}

    def aspect(table: str, name: str) -> list[str]:
        return shape.setdefault(table, {}).setdefault(name, [])

    for row in conn.execute(COLUMNS_SQL, (schema,)):
        table, name, pos, typ, notnull, identity, generated, default, collation, *seq = row
        line = f"{pos:>2} {name} {typ}{' NOT NULL' if notnull else ''}"
        if identity:
            line += f" identity={'BY DEFAULT' if identity == 'd' else 'ALWAYS'}"
        line += f" generated={generated!r}" if generated else ""
        line += f" default={default}" if default is not None else ""
        line += f" collate={collation}" if collation else ""
        line += f" sequence={tuple(seq)}" if seq[0] else ""
        aspect(table, "columns").append(line)

    for row in conn.execute(CONSTRAINTS_SQL, (schema,)):
        table, kind, cols, ref_table, same_schema, ref_cols, deferrable, deferred, *rest = row
        on_delete, on_update, match, definition = rest
        if kind == "p":
            aspect(table, "primary key").append(", ".join(cols))
        elif kind == "u":
            aspect(table, "unique").append(f"{{{', '.join(sorted(cols))}}}")
        elif kind == "f":
            target = ref_table if same_schema else f"{ref_table} (IN ANOTHER SCHEMA)"
            aspect(table, "foreign keys").append(
                f"({', '.join(cols)}) -> {target} ({', '.join(ref_cols)})"
                f" ON DELETE {FK_ACTIONS[on_delete]} ON UPDATE {FK_ACTIONS[on_update]}"
                f" MATCH {FK_MATCH[match]} deferrable={deferrable} initially_deferred={deferred}"
            )
        elif kind == "c":
            aspect(table, "checks").append(re.sub(r"\s+", " ", definition))
        else:
            aspect(table, "other constraints").append(f"{kind}: {definition}")

    for row in conn.execute(INDEXES_SQL, (schema,)):
        table, method, unique, nulls_not_distinct, constraint, predicate, *cols = row
        keys, included, opclasses, options, collations = cols
        parts = [
            f"{key} {opclass}{_key_order(option)}"
            + (f" COLLATE {collation}" if collation not in ("", "default") else "")
            for key, opclass, option, collation in zip(
                keys, opclasses, options, collations, strict=True
            )
        ]
        line = f"{'UNIQUE ' if unique else ''}{method} ({', '.join(parts)})"
        line += f" INCLUDE ({', '.join(included)})" if included else ""
        line += " NULLS NOT DISTINCT" if nulls_not_distinct else ""
        line += f" WHERE {predicate}" if predicate else ""
        backing = {"p": "primary key", "u": "unique constraint", "x": "exclusion constraint"}
        line += f" [{backing[constraint]}]" if constraint else ""
        aspect(table, "indexes").append(line)

    for aspects in shape.values():
        for name, lines in aspects.items():
            if name not in ("columns", "primary key"):
                lines.sort()
    return shape


def diff_table(table: str, reference: Shape, standalone: Shape) -> list[str]:
    ref, std = reference.get(table, {}), standalone.get(table, {})
    out: list[str] = []
    for name in sorted(ref.keys() | std.keys()):
        out += difflib.unified_diff(
            ref.get(name, []),
            std.get(name, []),
            f"schema.sql {table} {name}",
            f"standalone {table} {name}",
            lineterm="",
            n=2,
        )
    return out


@pytest.fixture(scope="module")
def schemas() -> Iterator[tuple[str, str]]:
    """(reference schema, standalone schema), both fresh and both dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    reference, standalone = f"aj_ref_{suffix}", f"aj_std_{suffix}"
    try:
        with psycopg.connect(_url(), autocommit=True) as conn:
            for schema in (reference, standalone):
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        _run_scripts(
            reference,
            (FIXTURES / "schema.sql").read_text(),
            (FIXTURES / "reference-rows.sql").read_text(),
        )
        _run_scripts(
            standalone,
            _standalone("0001_antenna_tables.sql"),
            _standalone("0002_reference_rows.sql"),
        )
        yield reference, standalone
    finally:
        with psycopg.connect(_url(), autocommit=True) as conn:
            for schema in (reference, standalone):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )


@pytest.fixture(scope="module")
def shapes(schemas: tuple[str, str]) -> tuple[Shape, Shape]:
    with psycopg.connect(_url(), autocommit=True) as conn:
        return describe(conn, schemas[0]), describe(conn, schemas[1])


def test_standalone_creates_exactly_the_antenna_tables_jobs_use(shapes):
    reference, standalone = shapes
    assert set(TABLES) <= reference.keys(), "schema.sql lacks tables this test expects"
    assert sorted(standalone) == sorted(TABLES)


@pytest.mark.parametrize("table", TABLES)
def test_table_has_antennas_shape(table, shapes):
    reference, standalone = shapes
    diff = diff_table(table, reference, standalone)
    assert not diff, "standalone schema differs from Antenna's:\n" + "\n".join(diff)


def _reference_rows(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    content_types = conn.execute("SELECT id, app_label, model FROM django_content_type").fetchall()
    permissions = conn.execute(
        "SELECT p.id, ct.app_label, ct.model, p.codename, p.name"
        " FROM auth_permission p JOIN django_content_type ct ON ct.id = p.content_type_id"
    ).fetchall()
    sequences = conn.execute(
        "SELECT last_value, is_called FROM django_content_type_id_seq"
        " UNION ALL SELECT last_value, is_called FROM auth_permission_id_seq"
    ).fetchall()
    return {
        "content types": sorted(content_types),
        "permissions": sorted(permissions),
        "sequences": sequences,
    }


def test_reference_rows_are_antennas_plus_first_project_permissions(schemas):
    reference, standalone = schemas
    with psycopg.connect(_url(), autocommit=True) as conn:
        ref, std = _reference_rows(conn, reference), _reference_rows(conn, standalone)
    assert {ct[1:] for ct in std["content types"]} == {ct[1:] for ct in ref["content types"]}
    ref_project = {(p[3], p[4]) for p in ref["permissions"] if p[1:3] == ("main", "project")}
    std_perms = {p[1:] for p in std["permissions"]}
    assert {p[:2] for p in std_perms} == {("main", "project")}
    std_project = {p[2:] for p in std_perms}
    assert ref_project <= std_project
    assert {codename for codename, _ in std_project - ref_project} == FIRST_PROJECT_CODENAMES
    assert {codename for codename, _ in std_project} >= JOB_CODENAMES


def test_reference_rows_twice_change_nothing(schemas):
    _, standalone = schemas
    with psycopg.connect(_url(), autocommit=True) as conn:
        before = _reference_rows(conn, standalone)
    _run_scripts(standalone, _standalone("0002_reference_rows.sql"))
    with psycopg.connect(_url(), autocommit=True) as conn:
        after = _reference_rows(conn, standalone)
    assert after == before
