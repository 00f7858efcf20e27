"""Head-of-line blocking: how long a new job waits for its first task message in NATS while 20
jobs sit in their aggregation phase and one job is held in a slow collect.

The held collect is a statement that waits inside PostgreSQL (a test-only trigger on the job's
image set, tests/helpers/chaos.DbHold), so it occupies a long-queue activity slot and a pooled
connection for as long as the benchmark runs. Prints the delay from the start request
(JobActions.run, as the API and CLI call it) to the first message on the job's subject, for an
idle worker and for the busy one.

    .venv/bin/python benchmarks/head_of_line.py --busy 20 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.helpers.chaos when run as a script

from nats.aio.client import Client as NatsClient  # noqa: E402
from temporalio.client import Client  # noqa: E402

from antenna_db import job_store  # noqa: E402
from antenna_db.seed import seed  # noqa: E402
from core.naming import Names  # noqa: E402
from core.settings import Settings  # noqa: E402
from job_control.actions import JobActions  # noqa: E402
from tests.helpers.chaos import hold_collect  # noqa: E402


@dataclass
class HeadOfLine:
    idle: list[float]
    busy: list[float]
    aggregating: int
    held_in_collect: int

    def line(self) -> str:
        def stats(xs: list[float]) -> str:
            return (
                f"median {statistics.median(xs) * 1000:.0f} ms"
                f" (min {min(xs) * 1000:.0f}, max {max(xs) * 1000:.0f}, n={len(xs)})"
            )

        return (
            f"new job start -> first task in NATS: idle worker {stats(self.idle)};"
            f" with {self.aggregating} jobs aggregating and {self.held_in_collect} held in"
            f" collect {stats(self.busy)}"
        )


async def _new_job(pool: Any, images: int) -> int:
    async with pool.connection() as conn:
        seeded = await seed(conn, images)
        job = await job_store.create_ml_job(
            conn,
            seeded.ml_job(),
        )
    return job.id


async def _until(check: Any, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {within} s")
        await asyncio.sleep(0.05)  # polling interval


async def first_task_delay(actions: JobActions, nc: NatsClient, pool: Any) -> float:
    """Seconds from the start request to the first message on the new job's subject."""
    job_id = await _new_job(pool, 20)
    arrived = asyncio.get_running_loop().create_future()

    async def on_message(_msg: Any) -> None:
        if not arrived.done():
            arrived.set_result(time.monotonic())

    sub = await nc.subscribe(Names().subject(job_id), cb=on_message)
    try:
        started = time.monotonic()
        await actions.run(job_id)
        first: float = await asyncio.wait_for(arrived, 60)
    finally:
        await sub.unsubscribe()
    await actions.cancel(job_id, reason="head-of-line benchmark done")
    return first - started


async def measure(
    client: Client, settings: Settings, pool: Any, nc: NatsClient, *, busy: int, rounds: int
) -> HeadOfLine:
    """Needs workers running for ``settings`` (the caller's)."""
    actions = JobActions(pool, client, settings)
    idle = [await first_task_delay(actions, nc, pool) for _ in range(rounds)]
    js = nc.jetstream()
    aggregating = [await _new_job(pool, 10) for _ in range(busy)]
    slow = await _new_job(pool, 10)
    try:
        for job_id in aggregating:
            await actions.run(job_id)

        async def all_published() -> bool:
            for job_id in aggregating:
                with contextlib.suppress(Exception):
                    info = await js.stream_info(settings.jobs.names.stream(job_id))
                    if info.state.messages == 10:
                        continue
                return False
            return True

        # Nobody answers their tasks: the aggregators wait, holding their long-queue slots.
        await _until(all_published)
        async with hold_collect(settings, slow) as hold:
            await actions.run(slow)
            await hold.wait_blocked()
            busy_delays = [await first_task_delay(actions, nc, pool) for _ in range(rounds)]
            await actions.cancel(slow, reason="head-of-line benchmark done")
    finally:
        for job_id in aggregating:
            with contextlib.suppress(Exception):
                await actions.cancel(job_id, reason="head-of-line benchmark done")
    return HeadOfLine(idle=idle, busy=busy_delays, aggregating=busy, held_in_collect=1)


async def main(busy: int, rounds: int) -> None:
    import nats
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from benchmarks.scratch import scratch_database
    from core import search_attributes
    from core.settings import JobSettings
    from storage.pool import open_pool
    from worker.app import build_workers
    from worker.resources import Resources

    async with (
        scratch_database() as db,
        await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
            search_attributes=list(search_attributes.ALL),
            data_converter=pydantic_data_converter,
            dev_server_log_level="error",
        ) as env,
    ):
        config = env.client.service_client.config
        settings = Settings(
            database=db,
            jobs=JobSettings(task_queue=f"aj-bench-{uuid.uuid4().hex[:8]}"),
        )
        settings = settings.model_copy(
            update={
                "temporal": settings.temporal.model_copy(update={"address": config.target_host})
            }
        )
        pool = await open_pool(settings.database)
        resources = await Resources.open(settings, run_migrations=False)
        workers = build_workers(env.client, settings, resources)
        runs = [asyncio.create_task(w.run()) for w in workers]
        nc = await nats.connect(settings.nats.url)
        try:
            result = await measure(env.client, settings, pool, nc, busy=busy, rounds=rounds)
            print(result.line())
        finally:
            await nc.drain()
            await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
            await asyncio.gather(*runs, return_exceptions=True)
            await resources.close()
            await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=20, help="jobs sitting in aggregation")
    parser.add_argument("--rounds", type=int, default=5, help="new jobs measured per case")
    args = parser.parse_args()
    asyncio.run(main(args.busy, args.rounds))
