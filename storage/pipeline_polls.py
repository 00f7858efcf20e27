"""When a processing worker last polled for tasks of each pipeline (table ``pipeline_polls``).

The API records a poll of ``POST /jobs/{id}/tasks/`` (throttled per process, api/liveness.py);
the aggregators read the age of their pipeline's last poll with their per-interval watch
(activities/async_api/inbox_watch.py), so a job whose pipeline no worker polls says it is
waiting for workers instead of looking stalled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel


class PipelinePoll(BaseModel):
    pipeline_id: int
    slug: str | None
    polled_at: datetime
    # Seconds since the poll, by the database's clock.
    age: float


async def record(conn: AsyncConnection[Any], pipeline_id: int) -> None:
    await conn.execute(
        "INSERT INTO pipeline_polls (pipeline_id, polled_at) VALUES (%s, now())"
        " ON CONFLICT (pipeline_id) DO UPDATE SET polled_at = EXCLUDED.polled_at",
        (pipeline_id,),
    )


async def latest(conn: AsyncConnection[Any]) -> list[PipelinePoll]:
    """Every pipeline's last poll, newest first, with its slug (None if the pipeline is gone)."""
    cur = await conn.execute(
        "SELECT p.pipeline_id, m.slug, p.polled_at,"
        " extract(epoch FROM now() - p.polled_at)::float8 AS age"
        " FROM pipeline_polls p LEFT JOIN ml_pipeline m ON m.id = p.pipeline_id"
        " ORDER BY p.polled_at DESC"
    )
    return [PipelinePoll.model_validate(row) for row in await cur.fetchall()]
