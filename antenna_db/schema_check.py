"""Antenna's live schema against the manifest (antenna_db/schema_manifest.json), and which
database errors come from a schema change rather than from a row's own data.

``compare`` sorts every difference into a problem (antenna-jobs would fail or write wrong rows:
refuse to start) or a note (cannot matter: accepted and logged):

- problem: a used table or column missing (dropped or renamed), a column's type changed (a
  varchar narrowed included), a NOT NULL column without a default that our INSERTs do not
  write (new, or made NOT NULL), an inserted table's id that lost its identity;
- note: a new nullable column or one with a default, a column of a table we never insert into,
  a NOT NULL made nullable, a varchar widened, a default changed, other tables in the schema.
  Indexes and constraints are not compared: a new one can refuse a row but never a save as a
  whole, and the row's error says which.

``schema_reason(err)`` tells a save refused for a schema reason (the results wait for the schema)
from one refused for its row's data (that image fails, as before).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import AsyncConnection, errors

from antenna_db import schema_manifest

log = logging.getLogger("antenna_jobs.schema")

_VARCHAR = re.compile(r"^character varying\((\d+)\)(\[\])?$")


@dataclass
class SchemaReport:
    schema: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Tables of the schema antenna-jobs does not use (Antenna has many: not worth a warning).
    other_tables: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        return "; ".join(self.problems)


class SchemaIncompatible(RuntimeError):
    """Antenna's tables differ from the manifest in a way that matters (each one named)."""

    def __init__(self, report: SchemaReport) -> None:
        super().__init__(
            f"Antenna's schema {report.schema!r} is not what antenna-jobs was built for"
            f" ({len(report.problems)} differences that matter): {report.describe()}."
            " Upgrade antenna-jobs to a release built for this Antenna schema"
            " (or give the columns named a default)."
        )
        self.report = report


def _widened(expected: str, live: str) -> bool:
    """A varchar (or varchar array) made longer: every value we write still fits."""
    want, have = _VARCHAR.match(expected), _VARCHAR.match(live)
    return bool(
        want
        and have
        and want.group(2) == have.group(2)
        and int(have.group(1)) >= int(want.group(1))
    )


def compare(
    manifest: dict[str, Any],
    live: dict[str, list[dict[str, Any]]],
    schema: str,
    other_tables: int = 0,
) -> SchemaReport:
    """The differences between the manifest and ``live`` (table -> columns, as
    schema_manifest.read_columns gives them)."""
    report = SchemaReport(schema=schema, other_tables=other_tables)
    for table, spec in manifest["tables"].items():
        have = {c["name"]: c for c in live.get(table, [])}
        if not have:
            report.problems.append(f"table {table} is missing")
            continue
        inserted = bool(spec["inserted"])
        want = {c["name"]: c for c in spec["columns"]}
        for name, col in want.items():
            where = f"{table}.{name}"
            got = have.get(name)
            if got is None:
                report.problems.append(f"column {where} is missing (dropped or renamed)")
                continue
            if got["type"] != col["type"]:
                if _widened(col["type"], got["type"]):
                    report.notes.append(f"{where} widened from {col['type']} to {got['type']}")
                else:
                    report.problems.append(
                        f"column {where} is {got['type']}, antenna-jobs expects {col['type']}"
                    )
            if col["nullable"] and not got["nullable"] and got["default"] is None:
                message = f"column {where} became NOT NULL without a default"
                if inserted:
                    report.problems.append(message + ": our INSERTs may leave it NULL")
                else:
                    report.notes.append(message + " (we never insert into the table)")
            elif not col["nullable"] and got["nullable"]:
                report.notes.append(f"{where} is now nullable")
            if col["default"] != got["default"]:
                if inserted and col["default"] == "identity" and got["default"] is None:
                    report.problems.append(
                        f"column {where} lost its identity: our INSERTs take ids from it"
                    )
                else:
                    report.notes.append(
                        f"{where} default {col['default']!r} is now {got['default']!r}"
                    )
        for name, got in have.items():
            if name in want:
                continue
            where = f"{table}.{name}"
            if not got["nullable"] and got["default"] is None and inserted:
                report.problems.append(
                    f"new column {where} {got['type']} is NOT NULL without a default:"
                    " antenna-jobs does not write it"
                )
            else:
                kind = "nullable" if got["nullable"] else f"default {got['default']!r}"
                if not got["nullable"] and got["default"] is None:
                    kind = "NOT NULL, a table we never insert into"
                report.notes.append(f"new column {where} {got['type']} ({kind})")
    return report


async def read_live(conn: AsyncConnection[Any], schema: str) -> tuple[dict[str, Any], int]:
    """The used tables' columns in ``schema``, and how many other tables it holds."""
    tables = list(schema_manifest.USED_TABLES)
    async with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        await cur.execute(schema_manifest.COLUMNS_SQL, (schema, tables))
        live: dict[str, list[dict[str, Any]]] = {}
        for table, name, typ, nullable, default in await cur.fetchall():
            live.setdefault(table, []).append(
                {"name": name, "type": typ, "nullable": nullable, "default": default}
            )
        await cur.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND NOT tablename = ANY(%s)",
            (schema, tables),
        )
        row = await cur.fetchone()
    return live, int(row[0]) if row else 0


async def check(conn: AsyncConnection[Any], schema: str) -> SchemaReport:
    """Antenna's tables in ``schema`` against the committed manifest; notes logged."""
    live, others = await read_live(conn, schema)
    report = compare(schema_manifest.load(), live, schema, others)
    if report.notes:
        # One line, at WARNING so a worker without logging set up shows it too: Antenna changed,
        # in ways that cannot matter to antenna-jobs.
        log.warning(
            "Antenna schema %s differs from the manifest in ways that cannot matter (accepted): %s",
            schema,
            "; ".join(report.notes),
        )
    log.info("Antenna schema %s: %d other tables, not used by antenna-jobs", schema, others)
    for problem in report.problems:
        log.error("Antenna schema %s: %s", schema, problem)
    return report


async def require_compatible(url: str, schema: str) -> SchemaReport:
    """``check`` on a connection of its own; raises SchemaIncompatible naming what matters."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        report = await check(conn, schema)
    if not report.ok:
        raise SchemaIncompatible(report)
    return report


# Errors a changed schema causes in statements that worked against the manifest's schema.
_SCHEMA_ERRORS: tuple[type[Exception], ...] = (
    errors.UndefinedTable,
    errors.UndefinedColumn,
    errors.UndefinedObject,
    errors.UndefinedFunction,  # an operator on a column whose type changed (text = jsonb)
    errors.DatatypeMismatch,
    errors.InvalidTextRepresentation,
    errors.CannotCoerce,
    errors.WrongObjectType,
)


@dataclass(frozen=True)
class SchemaFault:
    """A statement refused because Antenna's schema changed: where, and the database's words."""

    table: str | None
    column: str | None
    error: str

    def describe(self) -> str:
        where = ".".join(p for p in (self.table, self.column) if p) or "a table we use"
        return f"{where}: {self.error}"


def _expected_not_null(table: str | None, column: str | None) -> bool:
    """The manifest has the column NOT NULL: a NULL there is our row's fault, not the schema's."""
    if table is None or column is None:
        return False
    spec = schema_manifest.load()["tables"].get(table)
    if spec is None:
        return False
    return any(c["name"] == column and not c["nullable"] for c in spec["columns"])


def schema_reason(err: BaseException | None) -> SchemaFault | None:
    """The schema fault behind ``err`` (or an exception it was raised from), None if the error
    is not a schema change's (a row's own data, an outage, a bug)."""
    seen = 0
    while err is not None and seen < 5:
        if isinstance(err, psycopg.Error):
            diag = err.diag
            text = (diag.message_primary or str(err)).strip()
            if isinstance(err, _SCHEMA_ERRORS):
                return SchemaFault(diag.table_name, diag.column_name, text)
            if isinstance(err, errors.NotNullViolation):
                if _expected_not_null(diag.table_name, diag.column_name):
                    return None
                return SchemaFault(diag.table_name, diag.column_name, text)
            return None
        err = err.__cause__ or err.__context__
        seen += 1
    return None
