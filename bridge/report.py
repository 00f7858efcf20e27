"""What the bridge tells the rest of antenna-jobs: its view of the broker (a BridgeReport, kept in
table ``bridge_reports``, one row per jobs queue) and each message it dead-letters.

The bridge is a process of its own; ``antenna-jobs status`` and ``/metrics`` read its last report
from the database, so they need no broker connection. A report older than STALE_AFTER means the
bridge is not running (or cannot reach the database).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel

# A bridge reports every few seconds (settings.antenna.report_interval).
STALE_AFTER = 60.0


class BridgeReport(BaseModel):
    queue: str
    connected: bool
    queue_depth: int | None = None
    # Every consumer of the jobs queue, the bridge included.
    consumers: int | None = None
    # Consumers other than this bridge: they take Runs the bridge never sees.
    foreign_consumers: int | None = None
    # Messages kept in the dead-letter queue.
    dead_lettered: int | None = None
    error: str | None = None


class SavedReport(BridgeReport):
    # Seconds since the report, by the database's clock.
    age: float

    @property
    def stale(self) -> bool:
        return self.age > STALE_AFTER


@dataclass(frozen=True)
class DeadLetter:
    """A message the bridge gave up on (job_id None: it named no readable job)."""

    job_id: int | None
    task_id: str | None
    reason: str
    attempts: int


_FIELDS = ("queue", "connected", "queue_depth", "consumers", "foreign_consumers", "dead_lettered")


async def save(conn: AsyncConnection[Any], report: BridgeReport) -> None:
    """Upsert; a disconnected report keeps the last figures (they are what was last seen)."""
    await conn.execute(
        "INSERT INTO bridge_reports (queue, connected, queue_depth, consumers,"
        " foreign_consumers, dead_lettered, error, reported_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, now())"
        " ON CONFLICT (queue) DO UPDATE SET connected = EXCLUDED.connected,"
        " queue_depth = coalesce(EXCLUDED.queue_depth, bridge_reports.queue_depth),"
        " consumers = coalesce(EXCLUDED.consumers, bridge_reports.consumers),"
        " foreign_consumers = coalesce(EXCLUDED.foreign_consumers,"
        " bridge_reports.foreign_consumers),"
        " dead_lettered = coalesce(EXCLUDED.dead_lettered, bridge_reports.dead_lettered),"
        " error = EXCLUDED.error, reported_at = now()",
        (*(getattr(report, f) for f in _FIELDS), report.error),
    )


async def latest(conn: AsyncConnection[Any]) -> list[SavedReport]:
    cur = await conn.execute(
        "SELECT queue, connected, queue_depth, consumers, foreign_consumers, dead_lettered,"
        " error, extract(epoch FROM now() - reported_at)::float8 AS age"
        " FROM bridge_reports ORDER BY queue"
    )
    return [SavedReport.model_validate(row) for row in await cur.fetchall()]
