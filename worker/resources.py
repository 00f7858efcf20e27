"""The clients one worker process shares between its activities: opened once, closed once."""

from __future__ import annotations

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
        return cls(pool=pool, redis=redis, nc=nc, js=js)

    async def close(self) -> None:
        await self.http.aclose()
        with suppress(Exception):
            await self.nc.drain()
        await self.redis.aclose()
        await self.pool.close()
