"""Taxa of classifications, as Antenna's ``get_or_create_taxon_for_classification`` finds them.

A label matches the active taxon whose ``name`` is the label or whose ``search_names`` hold it,
the first by (ordering, name). A label nothing matches becomes a new taxon (``rank`` from the
classifier's category map at the position of the highest score, else ``UNKNOWN``). Every taxon a
classifier returns is added to the global taxa list "Taxa returned by <algorithm name>".
Taxa are global: ``main_taxon_projects`` is never written (Antenna derives a project's taxa from
its occurrences).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

_LOOKUP = """
WITH l AS (SELECT DISTINCT unnest(%(labels)s::text[]) AS label),
matched AS (
    SELECT l.label, t.id, t.ordering, t.name FROM l
    JOIN main_taxon t ON t.active AND t.name = l.label
    UNION ALL
    SELECT u.label, t.id, t.ordering, t.name FROM main_taxon t
    CROSS JOIN LATERAL unnest(t.search_names) AS u(label)
    WHERE t.active AND t.search_names IS NOT NULL AND u.label = ANY(%(labels)s::text[])
)
SELECT DISTINCT ON (label) label, id FROM matched ORDER BY label, ordering, name, id
"""
# A taxon of the same name that is inactive (or another taxon holding the display name) makes
# the insert a no-op: the label then takes the existing row of that name, if there is one.
_CREATE = """
INSERT INTO main_taxon (created_at, updated_at, name, rank, active, author, notes, parents_json,
                        display_name, search_names)
SELECT now(), now(), n.label, n.rank, true, '', '', '[]'::jsonb,
       CASE WHEN n.rank = 'GENUS' THEN n.label || ' sp.' ELSE n.label END, '{}'::varchar[]
FROM unnest(%(labels)s::text[], %(ranks)s::text[]) AS n(label, rank)
ON CONFLICT DO NOTHING
"""
_BY_NAME = "SELECT name AS label, id FROM main_taxon WHERE name = ANY(%s::text[])"
_LIST_NAME = "Taxa returned by {}"


@dataclass(frozen=True)
class NewTaxon:
    label: str
    rank: str


async def lookup(conn: AsyncConnection[Any], labels: list[str]) -> dict[str, int]:
    """label -> taxon id for the labels an existing taxon matches."""
    if not labels:
        return {}
    cur = await conn.execute(_LOOKUP, {"labels": labels})
    return {r["label"]: int(r["id"]) for r in await cur.fetchall()}


async def create(conn: AsyncConnection[Any], taxa: list[NewTaxon]) -> dict[str, int]:
    """Create the taxa (idempotent); label -> id of the row now holding each name."""
    if not taxa:
        return {}
    await conn.execute(
        _CREATE, {"labels": [t.label for t in taxa], "ranks": [t.rank for t in taxa]}
    )
    cur = await conn.execute(_BY_NAME, ([t.label for t in taxa],))
    return {r["label"]: int(r["id"]) for r in await cur.fetchall()}


async def _list_id(conn: AsyncConnection[Any], name: str) -> int | None:
    cur = await conn.execute(
        "SELECT id FROM main_taxalist WHERE name = %s ORDER BY id LIMIT 1", (name,)
    )
    row = await cur.fetchone()
    return int(row["id"]) if row else None


async def add_to_lists(conn: AsyncConnection[Any], pairs: set[tuple[str, int]]) -> None:
    """Add (algorithm name, taxon id) pairs to each algorithm's "Taxa returned by" list."""
    if not pairs:
        return
    names = sorted({_LIST_NAME.format(name) for name, _ in pairs})
    lists: dict[str, int] = {}
    for name in names:
        found = await _list_id(conn, name)
        if found is None:
            # The list's name is not unique in Antenna's schema: one creator at a time. Only to
            # create it: the lock lasts until commit, and every batch of every job of the
            # pipeline taking it made their saves wait for each other.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
            found = await _list_id(conn, name)
        if found is None:
            cur = await conn.execute(
                "INSERT INTO main_taxalist (created_at, updated_at, name, description)"
                " VALUES (now(), now(), %s, '') RETURNING id",
                (name,),
            )
            row = await cur.fetchone()
            assert row is not None
            found = int(row["id"])
        lists[name] = found
    ordered = sorted(pairs)
    # Pairs already there are left out before the insert: a conflict on one another
    # transaction has just inserted would wait for that transaction to end.
    await conn.execute(
        "INSERT INTO main_taxalist_taxa (taxalist_id, taxon_id)"
        " SELECT n.l, n.t FROM unnest(%s::bigint[], %s::bigint[]) AS n(l, t)"
        " WHERE NOT EXISTS (SELECT 1 FROM main_taxalist_taxa e"
        "                   WHERE e.taxalist_id = n.l AND e.taxon_id = n.t)"
        " ON CONFLICT DO NOTHING",
        (
            [lists[_LIST_NAME.format(name)] for name, _ in ordered],
            [taxon for _, taxon in ordered],
        ),
    )
