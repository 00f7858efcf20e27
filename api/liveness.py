"""Liveness "heartbeats" of pull-mode processing services, inferred from their HTTP polls.

Requests carry no service identity (antenna#1194), so, like Antenna, a poll marks every async
service (``endpoint_url IS NULL``) of the pipeline or project seen. Each key is written at most
once per ``interval`` per process (antenna#1258); a failed write never fails the request.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Hashable
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from antenna_db import processing_services
from core.expiring import ExpiringMap
from storage import pipeline_polls
from storage.pool import Pool

log = logging.getLogger(__name__)

HEARTBEAT_THROTTLE_SECONDS = 30.0
# A pipeline's last task poll (pipeline_polls) is written at most this often per process.
POLL_THROTTLE_SECONDS = 2.0


class Throttle:
    """``ready(key)`` is True at most once per interval per key. Holds at most ``max_keys``
    keys (the least recently ready go first: such a key is merely ready again early)."""

    def __init__(self, interval: float, max_keys: int = 10_000) -> None:
        self._last: ExpiringMap[Hashable, None] = ExpiringMap(interval, max_keys)

    @property
    def interval(self) -> float:
        return self._last.ttl

    @interval.setter
    def interval(self, value: float) -> None:
        self._last.ttl = value

    def __len__(self) -> int:
        return len(self._last)

    def ready(self, key: Hashable) -> bool:
        if key in self._last:
            return False
        self._last.put(key, None)
        return True


class Liveness:
    def __init__(
        self, pool: Pool, db_timeout: float, interval: float = HEARTBEAT_THROTTLE_SECONDS
    ) -> None:
        self._pool = pool
        self._db_timeout = db_timeout
        self.throttle = Throttle(interval)
        self.poll_throttle = Throttle(POLL_THROTTLE_SECONDS)

    async def polled(self, pipeline_id: int) -> None:
        """From /tasks/: a processing worker asked for tasks of a job of this pipeline."""
        if not self.poll_throttle.ready(pipeline_id):
            return
        try:
            async with self._pool.connection(timeout=self._db_timeout) as conn:
                await pipeline_polls.record(conn, pipeline_id)
        except (psycopg.Error, PoolTimeout) as err:
            log.warning("could not record the poll of pipeline %s: %s", pipeline_id, err)

    async def pipeline_seen(self, pipeline_id: int, project_id: int) -> None:
        """From /tasks/ and /result/: the async services of the job's pipeline in its project."""
        if self.throttle.ready(("pipeline", pipeline_id, project_id)):
            await self._write(pipeline_id=pipeline_id, project_id=project_id)

    async def pipelines_seen(self, slugs: list[str], project_id: int | None) -> None:
        """From list polls filtered by pipeline slugs (and maybe a project)."""
        # A digest, not the slugs: a poll may name thousands of them.
        digest = hashlib.blake2b("\n".join(sorted(slugs)).encode(), digest_size=16).digest()
        key = ("slugs", digest, project_id)
        if slugs and self.throttle.ready(key):
            await self._write(slugs=slugs, project_id=project_id)

    async def project_seen(self, project_id: int) -> None:
        """From list polls filtered by project only."""
        if self.throttle.ready(("project", project_id)):
            await self._write(project_id=project_id)

    async def _write(self, **which: Any) -> None:
        try:
            async with self._pool.connection(timeout=self._db_timeout) as conn:
                await processing_services.pull_services_seen(conn, **which)
        except (psycopg.Error, PoolTimeout) as err:
            log.warning("could not record processing service liveness: %s", err)
