"""The durable inbox of posted results: written by the API before it acks, drained by the
aggregator, which saves and deletes rows in one transaction so a replay cannot count twice."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel

from core.states import JobState


class InboxEntry(BaseModel):
    image_id: int | None
    reply_subject: str
    is_error: bool
    # The result as JSON; the API passes the text it validated (no second serialisation).
    payload: dict[str, Any] | str


async def store(conn: AsyncConnection[Any], job_id: int, entries: list[InboxEntry]) -> list[int]:
    """Insert entries in one statement; returns their row ids in the same order."""
    if not entries:
        return []
    cur = await conn.execute(
        "INSERT INTO result_inbox (job_id, image_id, reply_subject, is_error, payload)"
        " SELECT %s, e.image_id, e.reply_subject, e.is_error, e.payload"
        " FROM unnest(%s::bigint[], %s::text[], %s::boolean[], %s::jsonb[])"
        "      WITH ORDINALITY AS e(image_id, reply_subject, is_error, payload, n)"
        " ORDER BY e.n RETURNING id",
        (job_id, *_columns(entries)),
    )
    return [int(row["id"]) for row in await cur.fetchall()]


def _columns(entries: list[InboxEntry]) -> tuple[list[Any], ...]:
    return (
        [e.image_id for e in entries],
        [e.reply_subject for e in entries],
        [e.is_error for e in entries],
        [e.payload if isinstance(e.payload, str) else json.dumps(e.payload) for e in entries],
    )


async def store_while_accepting(
    conn: AsyncConnection[Any],
    job_id: int,
    entries: list[InboxEntry],
    refused: Iterable[JobState],
) -> list[int] | None:
    """Like ``store``, but only while the job's status is not in ``refused``; None if it is.

    The status is read FOR SHARE in the insert itself, so a concurrent status change (a cancel)
    either waits until these rows are committed (the job's cleanup, which runs after it, then
    removes them) or is seen here and nothing is inserted: no row can land after the cleanup.
    """
    if not entries:
        return []
    cur = await conn.execute(
        "WITH job AS (SELECT id FROM jobs WHERE id = %s AND NOT (status = ANY(%s)) FOR SHARE)"
        " INSERT INTO result_inbox (job_id, image_id, reply_subject, is_error, payload)"
        " SELECT job.id, e.image_id, e.reply_subject, e.is_error, e.payload"
        " FROM job, unnest(%s::bigint[], %s::text[], %s::boolean[], %s::jsonb[])"
        "      WITH ORDINALITY AS e(image_id, reply_subject, is_error, payload, n)"
        " ORDER BY e.n RETURNING id",
        (job_id, [s.value for s in refused], *_columns(entries)),
    )
    ids = [int(row["id"]) for row in await cur.fetchall()]
    return ids or None


async def store_each_while_accepting(
    conn: AsyncConnection[Any],
    job_id: int,
    entries: list[InboxEntry],
    refused: Iterable[JobState],
) -> list[int] | None:
    """``store_while_accepting`` one entry per statement, all in one transaction.

    Same rows, same atomic status check (the first statement's FOR SHARE lock holds until the
    commit), but each statement carries one result: a 150 MB post never becomes one 150 MB
    parameter to escape while the event loop waits, nor a second copy of itself in memory.
    """
    if not entries:
        return []
    states = list(refused)
    ids: list[int] = []
    async with conn.transaction():
        for entry in entries:
            stored = await store_while_accepting(conn, job_id, [entry], states)
            if stored is None:
                return None  # refused at the first statement: nothing was inserted
            ids += stored
    return ids
