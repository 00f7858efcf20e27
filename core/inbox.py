"""The durable inbox of posted results: written by the API before it acks, drained by the
aggregator, which saves and deletes rows in one transaction so a replay cannot count twice."""

from __future__ import annotations

import json
from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel


class InboxEntry(BaseModel):
    image_id: int | None
    reply_subject: str
    is_error: bool
    payload: dict[str, Any]


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
        (
            job_id,
            [e.image_id for e in entries],
            [e.reply_subject for e in entries],
            [e.is_error for e in entries],
            [json.dumps(e.payload) for e in entries],
        ),
    )
    return [int(row["id"]) for row in await cur.fetchall()]
