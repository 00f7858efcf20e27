"""The manifest's lists of tables follow our SQL (so they cannot rot), and the comparison's rules
on hand-made schemas (no database: tests/integration/test_schema_check.py runs them on real ones).
"""

from __future__ import annotations

import re
from pathlib import Path

from antenna_db import schema_manifest
from antenna_db.schema_check import compare

ROOT = Path(__file__).parent.parent.parent
PRODUCTION = [
    "antenna_db",
    "activities",
    "api",
    "bridge",
    "core",
    "job_control",
    "storage",
    "worker",
    "cli",
]


def antennas_tables() -> set[str]:
    text = (ROOT / "tests" / "fixtures" / "antenna" / "schema.sql").read_text()
    return set(re.findall(r"^CREATE TABLE (\w+)", text, re.M))


def sources(*, seed: bool = True) -> dict[Path, str]:
    found = {}
    for folder in PRODUCTION:
        for path in (ROOT / folder).rglob("*.py"):
            if seed or path.name != "seed.py":
                found[path] = path.read_text()
    return found


def test_every_antenna_table_our_code_names_is_in_the_manifest() -> None:
    named = {
        table
        for text in sources().values()
        for table in antennas_tables()
        if re.search(rf"\b{table}\b", text)
    }
    # Named in a docstring only: "main_taxon_projects is never written".
    assert named - set(schema_manifest.USED_TABLES) == {"main_taxon_projects"}
    assert set(schema_manifest.USED_TABLES) <= antennas_tables()


def test_the_inserted_tables_are_those_our_inserts_name() -> None:
    inserted = {
        table
        for text in sources(seed=False).values()
        for table in re.findall(r"INSERT INTO (\w+)", text)
        if table in antennas_tables()
    }
    assert inserted == schema_manifest.INSERTED_TABLES


def column(name: str, typ: str, nullable: bool = True, default: str | None = None) -> dict:
    return {"name": name, "type": typ, "nullable": nullable, "default": default}


MANIFEST = {
    "tables": {
        "t": {
            "inserted": True,
            "columns": [
                column("id", "bigint", False, "identity"),
                column("label", "character varying(255)", False),
                column("note", "text"),
            ],
        },
        "r": {"inserted": False, "columns": [column("id", "bigint", False, "identity")]},
    }
}


def live(**changes: list[dict]) -> dict[str, list[dict]]:
    tables = {name: list(spec["columns"]) for name, spec in MANIFEST["tables"].items()}
    tables.update(changes)
    return tables


def test_the_same_schema_has_no_differences() -> None:
    found = compare(MANIFEST, live(), "s")
    assert (found.problems, found.notes) == ([], [])


def test_what_matters_is_refused() -> None:
    t = MANIFEST["tables"]["t"]["columns"]
    found = compare(
        MANIFEST,
        live(
            t=[
                column("id", "bigint", False),  # identity lost
                column("label", "character varying(100)", False),  # narrowed
                column("note", "text", False),  # NOT NULL now, no default
                column("extra", "integer", False),  # new, NOT NULL, no default
            ]
        ),
        "s",
    )
    assert found.problems == [
        "column t.id lost its identity: our INSERTs take ids from it",
        "column t.label is character varying(100), antenna-jobs expects character varying(255)",
        "column t.note became NOT NULL without a default: our INSERTs may leave it NULL",
        "new column t.extra integer is NOT NULL without a default: antenna-jobs does not write it",
    ]
    assert compare(MANIFEST, live(t=t[:2]), "s").problems == [
        "column t.note is missing (dropped or renamed)"
    ]
    assert compare(MANIFEST, {"r": live()["r"]}, "s").problems == ["table t is missing"]


def test_what_cannot_matter_is_accepted() -> None:
    found = compare(
        MANIFEST,
        live(
            t=[
                column("id", "bigint", False, "identity"),
                column("label", "character varying(300)", True),
                column("note", "text", False, "''::text"),
                column("extra", "integer", False, "0"),
                column("more", "jsonb"),
            ],
            r=[column("id", "bigint", False, "identity"), column("x", "integer", False)],
        ),
        "s",
        other_tables=2,
    )
    assert found.problems == []
    assert found.notes == [
        "t.label widened from character varying(255) to character varying(300)",
        "t.label is now nullable",
        "t.note default None is now \"''::text\"",
        "new column t.extra integer (default '0')",
        "new column t.more jsonb (nullable)",
        "new column r.x integer (NOT NULL, a table we never insert into)",
    ]
    assert found.other_tables == 2
