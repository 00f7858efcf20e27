"""The clients one worker process shares between its activities: opened once, closed once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import psycopg
import redis.asyncio as aioredis
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from activities.after_commit import AfterCommit
from antenna_db.cachalot import CachalotInvalidator
from bridge.antenna_tasks import AntennaTaskSender
from core.db import migrate, open_pool
from core.settings import Settings

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
    # Antenna's query cache and crop worker, told of our writes (when configured).
    after: AfterCommit = field(default_factory=AfterCommit)
    _closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    @classmethod
    async def open(cls, settings: Settings, *, run_migrations: bool = True) -> Resources:
        if run_migrations:
            await migrate(settings.database)
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
        resources._antenna_side(settings)
        return resources

    def _antenna_side(self, settings: Settings) -> None:
        invalidate = None
        if settings.antenna.cache_url:
            cache = aioredis.Redis.from_url(settings.antenna.cache_url)
            invalidate = CachalotInvalidator(cache).invalidate
            self._closers.append(cache.aclose)
        sender = AntennaTaskSender(settings.antenna)
        queue_crops = sender.create_detection_images if sender.enabled else None
        self._closers.append(sender.aclose)
        self.after = AfterCommit(invalidate, queue_crops)

    async def close(self) -> None:
        await self.after.close()
        for closer in self._closers:
            with suppress(Exception):
                await closer()
        await self.http.aclose()
        with suppress(Exception):
            await self.nc.drain()
        await self.redis.aclose()
        await self.pool.close()
