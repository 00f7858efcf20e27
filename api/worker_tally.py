"""Per-process tally of the worker calls this API served, written in batches
(storage/job_workers.py).

A ``/tasks/`` or ``/result/`` call only adds to a dict in memory; at most once per
``interval`` a call that finds the tally due writes all of it in one statement (and the job log
lines "Worker ... started fetching tasks" of the workers seen for the first time). So the hot path
makes no extra round trip per request, and the database sees one upsert per API process every
few seconds however many workers poll. A failed write keeps the calls for the next one: the
counts are late, never lost while the process lives (nor ever counted twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import Request
from psycopg_pool import PoolTimeout

from antenna_db import job_store
from antenna_db.users import Caller
from core import worker_calls
from core.worker_calls import Calls, Identity
from storage import job_workers
from storage.pool import Pool

log = logging.getLogger(__name__)

FLUSH_SECONDS = 2.0
# Distinct (job, run, worker) entries held at most between flushes (a flood of made-up
# client_info names only delays its own counts): past it, new ones are dropped until a flush.
MAX_ENTRIES = 10_000


def identity(request: Request, who: Caller, client_info: Mapping[str, Any] | None) -> Identity:
    client = request.client
    return Identity(
        user_id=who.user_id,
        user_email=who.email,
        address=client.host if client is not None else "",
        user_agent=request.headers.get("user-agent", ""),
        client_info=client_info,
    )


class WorkerTally:
    def __init__(self, pool: Pool, db_timeout: float, interval: float = FLUSH_SECONDS) -> None:
        self._pool = pool
        self._db_timeout = db_timeout
        self.interval = interval
        self._calls: dict[tuple[int, str, str], Calls] = {}
        self._flushed_at = time.monotonic()
        self._lock = asyncio.Lock()
        # The flush due later, so the last calls before a quiet spell are written too.
        self._later: asyncio.Task[None] | None = None

    def _entry(self, who: Identity, job_id: int, run_id: str) -> Calls | None:
        key = (job_id, run_id, who.key)
        calls = self._calls.get(key)
        if calls is None:
            if len(self._calls) >= MAX_ENTRIES:
                return None
            calls = self._calls[key] = Calls(identity=who, job_id=job_id, run_id=run_id)
        elif who.client_info:
            calls.identity = who
        return calls

    def fetched(self, who: Identity, job_id: int, run_id: str, tasks: int) -> None:
        calls = self._entry(who, job_id, run_id)
        if calls is not None:
            calls.task_calls += 1
            calls.tasks += tasks

    def posted(self, who: Identity, job_id: int, run_id: str, results: int) -> None:
        calls = self._entry(who, job_id, run_id)
        if calls is not None:
            calls.result_calls += 1
            calls.results += results

    async def maybe_flush(self) -> None:
        """Write the tally if it is due, else make sure it is written once it is (never fails
        the request)."""
        wait = self.interval - (time.monotonic() - self._flushed_at)
        if wait > 0 or self._lock.locked():
            if self._later is None or self._later.done():
                self._later = asyncio.create_task(self._flush_later(max(wait, 0.1)))
            return
        await self.flush()

    async def _flush_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        await self.flush()

    async def close(self) -> None:
        """The app stops: what is tallied is written now."""
        later, self._later = self._later, None
        if later is not None:
            later.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await later
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            self._flushed_at = time.monotonic()
            calls, self._calls = self._calls, {}
            if not calls:
                return
            try:
                # One transaction: the counts and the log lines go together, or are kept.
                async with (
                    self._pool.connection(timeout=self._db_timeout) as conn,
                    conn.transaction(),
                ):
                    new = await job_workers.record(conn, calls.values())
                    for job_id, worker in new:
                        who = next(c.identity for c in calls.values() if c.identity.key == worker)
                        name = worker_calls.client_name(who.client_info) or (
                            await job_workers.service_name(conn, who.user_id, who.address)
                        )
                        await job_store.append_log(
                            conn,
                            job_id,
                            f"Worker {name or who.address or '?'}"
                            f" (user {who.user_email or who.user_id})"
                            f" started fetching tasks (User-Agent {who.user_agent or '-'})",
                            context={"worker": worker, "address": who.address},
                        )
            except (psycopg.Error, PoolTimeout) as err:
                log.warning("could not record %d worker calls: %s", len(calls), err)
                for key, entry in calls.items():
                    self._merge(key, entry)

    def _merge(self, key: tuple[int, str, str], entry: Calls) -> None:
        kept = self._calls.get(key)
        if kept is None:
            self._calls[key] = entry
            return
        kept.task_calls += entry.task_calls
        kept.tasks += entry.tasks
        kept.result_calls += entry.result_calls
        kept.results += entry.results
