"""The job's derived state in Redis under Antenna's key names: pending sets per stage, the failed
set and the total. Postgres (job_images) is the truth; these keys are rebuilt from it when gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
import redis.asyncio as aioredis

from core.naming import Names
from storage import job_images

STAGES = ("process", "results")


class JobStateCache:
    def __init__(self, redis: aioredis.Redis, ttl_seconds: int, names: Names) -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._names = names

    async def add_pending(self, job_id: int, image_ids: Iterable[int], total: int) -> None:
        """One page of published images: pending in both stages (idempotent SADDs)."""
        ids = [str(i) for i in image_ids]
        pipe = self._redis.pipeline(transaction=False)
        if ids:
            for stage in STAGES:
                pipe.sadd(self._names.pending_key(job_id, stage), *ids)
                pipe.expire(self._names.pending_key(job_id, stage), self._ttl)
        pipe.set(self._names.total_key(job_id), total, ex=self._ttl)
        await pipe.execute()

    async def mark_done(self, job_id: int, done: Iterable[int], failed: Iterable[int]) -> None:
        """Images through both stages leave the pending sets; failed ones join the failed set."""
        done_ids = [str(i) for i in done]
        failed_ids = [str(i) for i in failed]
        if not done_ids and not failed_ids:
            return
        pipe = self._redis.pipeline(transaction=False)
        removed = done_ids + failed_ids
        for stage in STAGES:
            pipe.srem(self._names.pending_key(job_id, stage), *removed)
        if failed_ids:
            pipe.sadd(self._names.failed_key(job_id), *failed_ids)
            pipe.expire(self._names.failed_key(job_id), self._ttl)
        await pipe.execute()

    async def exists(self, job_id: int) -> bool:
        return bool(await self._redis.exists(self._names.total_key(job_id)))

    async def rebuild(
        self, conn: psycopg.AsyncConnection[Any], job_id: int, page_size: int = 5000
    ) -> None:
        """Recreate the keys from job_images (after a Redis flush), page by page."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(*self._names.redis_keys(job_id))
        await pipe.execute()
        total = 0
        last = 0
        while True:
            rows = await job_images.status_page(conn, job_id, last, page_size)
            if not rows:
                break
            last = rows[-1]["ordinal"]
            total += len(rows)
            pending = [str(r["source_image_id"]) for r in rows if r["status"] == "pending"]
            failed = [str(r["source_image_id"]) for r in rows if r["status"] == "failed"]
            pipe = self._redis.pipeline(transaction=False)
            for stage in STAGES:
                if pending:
                    pipe.sadd(self._names.pending_key(job_id, stage), *pending)
            if failed:
                pipe.sadd(self._names.failed_key(job_id), *failed)
            await pipe.execute()
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._names.total_key(job_id), total, ex=self._ttl)
        for key in self._names.redis_keys(job_id)[:3]:
            pipe.expire(key, self._ttl)
        await pipe.execute()

    async def delete(self, job_id: int) -> None:
        await self._redis.delete(*self._names.redis_keys(job_id))
