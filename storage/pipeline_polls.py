"""When a processing worker last polled for tasks of each pipeline (table ``pipeline_polls``).

The API records a poll of ``POST /jobs/{id}/tasks/`` (throttled per process, api/liveness.py);
the aggregators read the age of their pipeline's last poll with their per-interval watch
(activities/async_api/inbox_watch.py), so a job whose pipeline no worker polls says it is
waiting for workers instead of looking stalled. The overview lists them with their pipelines'
slugs (antenna_db/job_overview.py).
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
