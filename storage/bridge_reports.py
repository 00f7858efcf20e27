"""The bridge's view of Antenna's broker, one row per jobs queue (table ``bridge_reports``):
written by the bridge every few seconds (bridge/main.py), read by ``antenna-jobs status`` and
``/metrics`` (job_control/overview.py), so they need no broker connection. A report older than
STALE_AFTER means the bridge is not running (or cannot reach the database).
"""

from __future__ import annotations

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
