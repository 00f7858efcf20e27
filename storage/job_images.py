"""A job's image set (``job_images``): each image moves pending -> processed or failed once.

Only images still pending move, and callers add the moves to the run's counters
(storage/job_runs.py) in the same transaction: a replayed result moves nothing, saves nothing and
counts nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection

from core.text import STORED_ERROR_CHARS, storable

_MARK_PROCESSED = (
    "UPDATE job_images SET status = 'processed', updated_at = now()"
    " WHERE job_id = %s AND source_image_id = ANY(%s::bigint[]) AND status = 'pending'"
    " RETURNING source_image_id"
)
_MARK_FAILED = (
    "UPDATE job_images ji SET status = 'failed', error = f.error, updated_at = now()"
    " FROM unnest(%s::bigint[], %s::text[]) AS f(image_id, error)"
    " WHERE ji.job_id = %s AND ji.source_image_id = f.image_id AND ji.status = 'pending'"
    " RETURNING ji.source_image_id"
)
_FAIL_PENDING = (
    "UPDATE job_images SET status = 'failed', error = %s, updated_at = now()"
    " WHERE job_id = %s AND status = 'pending' RETURNING source_image_id"
)


async def mark_processed(
    conn: AsyncConnection[Any], job_id: int, images: Iterable[int]
) -> list[int]:
    """Move these images to processed; returns those that were still pending."""
    wanted = list(images)
    if not wanted:
        return []
    cur = await conn.execute(_MARK_PROCESSED, (job_id, wanted))
    return [int(r["source_image_id"]) for r in await cur.fetchall()]


async def mark_failed(conn: AsyncConnection[Any], job_id: int, errors: dict[int, str]) -> list[int]:
    """Move these images to failed with their reasons; returns those that were pending."""
    if not errors:
        return []
    cur = await conn.execute(
        _MARK_FAILED,
        (list(errors), [storable(e, STORED_ERROR_CHARS) for e in errors.values()], job_id),
    )
    return [int(r["source_image_id"]) for r in await cur.fetchall()]


async def fail_pending(conn: AsyncConnection[Any], job_id: int, reason: str) -> list[int]:
    cur = await conn.execute(_FAIL_PENDING, (storable(reason, STORED_ERROR_CHARS), job_id))
    return [int(r["source_image_id"]) for r in await cur.fetchall()]


async def failed_count(conn: AsyncConnection[Any], job_id: int) -> int:
    """Images the job's last run failed (what a failed-only retry queues)."""
    cur = await conn.execute(
        "SELECT count(*) AS n FROM job_images WHERE job_id = %s AND status = 'failed'", (job_id,)
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def status_page(
    conn: AsyncConnection[Any], job_id: int, after: int, limit: int
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT ordinal, source_image_id, status FROM job_images"
        " WHERE job_id = %s AND ordinal > %s ORDER BY ordinal LIMIT %s",
        (job_id, after, limit),
    )
    return list(await cur.fetchall())


async def remove_job(conn: AsyncConnection[Any], job_id: int) -> None:
    await conn.execute("DELETE FROM job_images WHERE job_id = %s", (job_id,))
