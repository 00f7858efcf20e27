"""The clients one worker process shares between its activities: opened once, closed once."""

from __future__ import annotations

from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import psycopg
import redis.asyncio as aioredis
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from activities.antenna_task.celery_link import AntennaCelery
from activities.async_api.inbox_watch import InboxWatch
from activities.crops import CropRequests
from antenna_db import cachalot, schema_check
from antenna_db.schema import ANTENNA
from bridge.antenna_tasks import AntennaTaskSender
from core.settings import Settings
from storage.migrate import migrate
from storage.pool import open_pool

# One JetStream context is shared by every publish of this process; each publish bounds its own
# window (settings.nats.publish_window), so the shared limit only has to stay out of the way.
_SHARED_PUBLISH_LIMIT = 1 << 20


@dataclass
class Resources:
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]
    redis: aioredis.Redis
    nc: NatsClient
    js: JetStreamContext
    # Requests to push-mode processing services (SYNC_API); each call sets its own timeouts.
    http: httpx.AsyncClient = field(default_factory=httpx.AsyncClient)
    # Antenna's crop worker, asked for the crops of new detections (when configured).
    crops: CropRequests = field(default_factory=CropRequests)
    # Wakes this process's aggregators when results arrive; reads their jobs' state in one go.
    inbox_watch: InboxWatch | None = None
    # Antenna's Celery for the job types its own code runs (Antenna mode; disabled otherwise).
    antenna_celery: AntennaCelery | None = None
    # What the Antenna side opened (crop task sender, cache invalidations), closed in reverse.
    _antenna: AsyncExitStack = field(default_factory=AsyncExitStack)

    @classmethod
    async def open(cls, settings: Settings, *, run_migrations: bool = True) -> Resources:
        if run_migrations:
            await migrate(settings.database, ANTENNA)
        # Antenna's tables as the manifest has them, or no start (each difference named).
        db = settings.database
        await schema_check.require_compatible(db.url, db.schema_name)
        pool = await open_pool(settings.database)
        redis = aioredis.Redis.from_url(settings.redis.url, decode_responses=True)
        try:
            nc = await nats.connect(
                settings.nats.url,
                connect_timeout=settings.nats.request_timeout.total_seconds(),
                max_reconnect_attempts=-1,
            )
        except BaseException:
            await redis.aclose()
            await pool.close()
            raise
        js = nc.jetstream(
            timeout=settings.nats.request_timeout.total_seconds(),
            publish_async_max_pending=_SHARED_PUBLISH_LIMIT,
        )
        resources = cls(pool=pool, redis=redis, nc=nc, js=js)
        resources.inbox_watch = InboxWatch(
            pool, settings.database, settings.jobs.heartbeat_interval.total_seconds()
        )
        await resources._antenna_side(settings)
        return resources

    async def _antenna_side(self, settings: Settings) -> None:
        sender = AntennaTaskSender(settings.antenna)
        self._antenna.push_async_callback(sender.aclose)
        self.crops = CropRequests(sender.create_detection_images if sender.enabled else None)
        self._antenna.push_async_callback(self.crops.close)
        self.antenna_celery = AntennaCelery(settings.antenna)
        self._antenna.push_async_callback(self.antenna_celery.aclose)
        await self._antenna.enter_async_context(cachalot.installed(settings.antenna.cache_url))

    async def close(self) -> None:
        if self.inbox_watch is not None:
            await self.inbox_watch.stop()
        with suppress(Exception):
            await self._antenna.aclose()
        await self.http.aclose()
        with suppress(Exception):
            await self.nc.drain()
        await self.redis.aclose()
        await self.pool.close()
