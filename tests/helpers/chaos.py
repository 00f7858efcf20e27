"""What the chaos and cancellation tests share: test profile, deterministic holds inside
PostgreSQL, a simulated ADC worker that records every delivery, the exactly-once checks and the
recovery times they report.

Holds: a test-only trigger makes the worker's own statement wait on an advisory lock the test
holds, so "kill it during collect" or "cancel it during publish" happens at a known point, not
after a guessed sleep. The trigger lives in the session's schema and matches one job only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import psycopg
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError
from temporalio.client import Client

from antenna_db import job_store
from antenna_db.job_store import JobRecord
from core.settings import Settings
from core.states import JobState
from job_control.actions import JobActions
from storage.pool import connect_kwargs
from tests.helpers import eventually
from tests.helpers.db import NAMES, job_counts, run_consumer
from tests.helpers.jobs import detections_for, make_job
from tests.helpers.processes import Proc, WorkerProcesses, worker_processes
from tests.helpers.temporal import SimulatedAdcWorker, simulated_worker

ROOT = Path(__file__).resolve().parent.parent.parent
RECOVERY_LOG = ROOT / ".state" / "chaos-recovery.jsonl"


def profile() -> str:
    """``ci`` (bounded, the default) or ``full`` (``make chaos``)."""
    return os.environ.get("ANTENNA_JOBS_TEST_PROFILE", "ci")


def pick(ci: Any, full: Any) -> Any:
    return full if profile() == "full" else ci


def record_recovery(fault: str, seconds: float) -> None:
    """Append one measured recovery time; ``make chaos`` prints their medians."""
    RECOVERY_LOG.parent.mkdir(parents=True, exist_ok=True)
    line = {"fault": fault, "seconds": round(seconds, 3), "profile": profile(), "at": time.time()}
    with RECOVERY_LOG.open("a") as out:
        out.write(json.dumps(line) + "\n")
    print(f"recovery {fault}: {seconds:.2f} s")


async def record_recovery_when(
    fault: str, started: float, check: Callable[[], Awaitable[Any]], within: float = 120.0
) -> None:
    """Record the time from ``started`` (time.monotonic) until ``check`` is first true."""
    await eventually(check, within=within, interval=0.05)
    record_recovery(fault, time.monotonic() - started)


_HOLD_FUNCTION = """
CREATE OR REPLACE FUNCTION aj_test_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(TG_ARGV[0]::bigint);
    RETURN NEW;
END $$
"""


class DbHold:
    """While held, the matching INSERT/UPDATE of ``table`` waits inside its transaction."""

    def __init__(self, settings: Settings, table: str, event: str, when: str) -> None:
        self._db = settings.database
        self.table = table
        self.event = event
        self.when = when
        self.key = random.randint(1 << 40, 1 << 61)
        self.name = f"aj_test_hold_{secrets.token_hex(6)}"
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.held = False

    async def __aenter__(self) -> DbHold:
        self._conn = await psycopg.AsyncConnection.connect(self._db.url, **connect_kwargs(self._db))
        await self._conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
        self.held = True
        await self._conn.execute(_HOLD_FUNCTION)
        await self._conn.execute(
            f"CREATE TRIGGER {self.name} BEFORE {self.event} ON {self.table} FOR EACH ROW"
            f" WHEN ({self.when}) EXECUTE FUNCTION aj_test_hold('{self.key}')"
        )
        return self

    async def waiting_pids(self) -> list[int]:
        """Backends blocked on this hold right now."""
        assert self._conn is not None
        cur = await self._conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
            (self.key >> 32, self.key & 0xFFFFFFFF),
        )
        return [row["pid"] for row in await cur.fetchall()]

    async def wait_blocked(self, within: float = 60.0) -> list[int]:
        return await eventually(self.waiting_pids, within=within, interval=0.05)

    async def terminate_waiters(self) -> None:
        """What a crashed worker's connections amount to: their transactions never commit."""
        assert self._conn is not None
        for pid in await self.waiting_pids():
            await self._conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

    async def release(self) -> None:
        if self.held and self._conn is not None:
            await self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            self.held = False

    async def __aexit__(self, *exc: object) -> None:
        assert self._conn is not None
        await self.release()
        await self._conn.execute(f"DROP TRIGGER IF EXISTS {self.name} ON {self.table}")
        await self._conn.close()


def job_hold(settings: Settings, table: str, op: str, job_id: int, *more: str) -> DbHold:
    """Hold ``op`` on ``table`` for one job (its ``job_id`` column, ``id`` of jobs_job) where
    ``more`` conditions hold too."""
    column = "id" if table == "jobs_job" else "job_id"
    return DbHold(settings, table, op, " AND ".join([f"NEW.{column} = {int(job_id)}", *more]))


def hold_collect(settings: Settings, job_id: int) -> DbHold:
    return job_hold(settings, "job_images", "INSERT", job_id)


def hold_no_url_failure(settings: Settings, job_id: int, image_id: int) -> DbHold:
    """Publish stores a failure for an image without URL before it publishes that page."""
    return job_hold(settings, "result_inbox", "INSERT", job_id, f"NEW.image_id = {int(image_id)}")


def hold_saves(settings: Settings, job_id: int) -> DbHold:
    """The aggregator's batch transaction, after it claimed inbox rows, before it commits."""
    claimed = "OLD.status = 'pending' AND NEW.status <> 'pending'"
    return job_hold(settings, "job_images", "UPDATE", job_id, claimed)


def hold_finalize(settings: Settings, job_id: int) -> DbHold:
    final = "NEW.status IN ('SUCCESS', 'FAILURE') AND OLD.status IS DISTINCT FROM NEW.status"
    return job_hold(settings, "jobs_job", "UPDATE", job_id, final)


@dataclass
class RecordingAdc(SimulatedAdcWorker):
    """The simulated ADC worker, plus: every delivery recorded by stream sequence, a budget of
    tasks to answer before it pauses, and a fetch loop that rides out NATS outages."""

    budget: int | None = None
    deliveries: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    def answer_more(self, count: int | None) -> None:
        """Answer ``count`` more tasks (None: all of them), then pause again."""
        self.budget = None if count is None else (self.budget or 0) + count
        self.gate.set()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._loop(stop)
        finally:
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.unsubscribe()

    async def _loop(self, stop: asyncio.Event) -> None:
        js = self.nc.jetstream()
        while not stop.is_set():
            if self.budget is not None and self.budget <= 0:
                self.gate.clear()
                waiter = asyncio.ensure_future(self.gate.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                continue
            try:
                if self._sub is None:
                    consumer = await run_consumer(self.pool, self.job_id)
                    if consumer is None:
                        raise NotFoundError
                    self._sub = await js.pull_subscribe_bind(consumer, NAMES.stream(self.job_id))
                want = self.batch_size if self.budget is None else min(self.batch_size, self.budget)
                msgs = await self._sub.fetch(want, timeout=0.2)
            except nats.errors.TimeoutError:
                continue
            except (NotFoundError, nats.errors.Error, OSError, TimeoutError):
                await self._drop_subscription()
                await asyncio.sleep(0.1)  # the stream is not there yet, or NATS is restarting
                continue
            if self.budget is not None:
                self.budget -= len(msgs)
            try:
                await self._answer(msgs)
            except (nats.errors.Error, OSError, TimeoutError):
                await asyncio.sleep(0.1)  # acks lost in an outage: NATS redelivers those tasks

    async def _drop_subscription(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _answer(self, msgs: list[Any]) -> None:
        for msg in msgs:
            image = int(json.loads(msg.data)["image_id"])
            self.deliveries[image].append(msg.metadata.sequence.stream)
        await super()._answer(msgs)

    def duplicate_messages(self) -> dict[int, set[int]]:
        """Images that reached the worker through more than one task message (not redeliveries
        of one message: those share a stream sequence)."""
        return {i: set(s) for i, s in self.deliveries.items() if len(set(s)) > 1}


async def processed_at_least(pool: Any, job_id: int, n: int) -> bool:
    return int((await job_counts(pool, job_id))["processed"]) >= n


@dataclass
class UnderWay:
    """A job running on worker processes, the simulated ADC worker paused (adc.answer_more)."""

    job: JobRecord
    adc: RecordingAdc
    workers: WorkerProcesses
    first: Proc


@contextlib.asynccontextmanager
async def job_under_way(
    pool: Any,
    client: Client,
    settings: Settings,
    nats_client: NatsClient,
    log_dir: Path,
    *,
    images: int,
    budget: int,
    batch_size: int = 100,
    **worker_env: str,
) -> AsyncIterator[UnderWay]:
    """A job of ``images`` run by one worker process (started with ``worker_env``), until the
    recording ADC worker has answered ``budget`` tasks in batches of ``batch_size`` and their
    results are saved; the worker processes stop when the block ends."""
    job, seeded, _ = await make_job(pool, images=images)
    adc = RecordingAdc(
        nats_client, pool, job.id, seeded.pipeline_slug, batch_size=batch_size, budget=budget
    )
    with worker_processes(settings, log_dir, **worker_env) as workers:
        first = workers.start()
        async with simulated_worker(adc):
            await JobActions(pool, client, settings).run(job.id)
            await eventually(lambda: processed_at_least(pool, job.id, budget), within=60)
            yield UnderWay(job, adc, workers, first)


async def wait_final(pool: Any, job_id: int, within: float = 120.0) -> JobState:
    async def final() -> JobState | None:
        async with pool.connection() as conn:
            status = await job_store.get_status(conn, job_id)
        return status if status in {JobState.SUCCESS, JobState.FAILURE, JobState.REVOKED} else None

    return await eventually(final, within=within, interval=0.1)


async def check_exactly_once(
    pool: Any, job_id: int, adc: RecordingAdc, *, failed: set[int] | frozenset[int] = frozenset()
) -> None:
    """Every image of the job processed (or failed) exactly once: rows, counters, messages."""
    async with pool.connection() as conn:
        job = await job_store.get_job(conn, job_id)
        cur = await conn.execute(
            "SELECT source_image_id, status FROM job_images WHERE job_id = %s", (job_id,)
        )
        images = {r["source_image_id"]: r["status"] for r in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT source_image_id, bbox_x1, count(*) AS n FROM job_detections WHERE job_id = %s"
            " GROUP BY source_image_id, algorithm_id, bbox_x1, bbox_y1, bbox_x2, bbox_y2",
            (job_id,),
        )
        groups = list(await cur.fetchall())
        cur = await conn.execute(
            "SELECT count(*) AS n FROM job_classifications c WHERE c.job_id = %s",
            (job_id,),
        )
        classifications = (await cur.fetchone())["n"]
        cur = await conn.execute(
            "SELECT count(*) AS n FROM result_inbox WHERE job_id = %s", (job_id,)
        )
        inbox_left = (await cur.fetchone())["n"]
    total = len(images)
    processed = {i for i, s in images.items() if s == "processed"}
    assert job.status == JobState.SUCCESS, job.status
    assert {i for i, s in images.items() if s == "failed"} == set(failed)
    assert len(processed) == total - len(failed) and "pending" not in images.values()
    assert [g for g in groups if g["n"] != 1] == [], "duplicate detections"
    real = [g for g in groups if g["bbox_x1"] is not None]
    want = sum(detections_for(i) for i in processed)
    assert len(real) == want
    assert {g["source_image_id"] for g in groups if g["bbox_x1"] is None} == {
        i for i in processed if detections_for(i) == 0
    }
    assert classifications == want
    assert inbox_left == 0
    process, results = job.progress.stage("process"), job.progress.stage("results")
    assert job.progress.stage("collect").param("total_images") == total
    assert (process.param("processed"), process.param("remaining")) == (total, 0)
    assert process.param("failed") == len(failed)
    assert results.param("captures") == len(processed)
    assert (results.param("detections"), results.param("classifications")) == (want, want)
    assert adc.duplicate_messages() == {}, "an image was published twice"
    published = set(images) - {i for i in failed if i not in adc.deliveries}
    assert set(adc.deliveries) == published
