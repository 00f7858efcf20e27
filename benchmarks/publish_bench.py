"""JetStream publish rate: our publish activity against Antenna's method, in the same run.

Ours: ``TaskQueueActivities.publish_tasks`` as the worker runs it (keyset pages from Postgres,
Redis pending state per page, publishes with a bounded window of PubAcks awaited on one
subscription (activities/async_api/publisher.py), Nats-Msg-Id dedup, heartbeat checkpoints).
Antenna's (ami/ml/orchestration/jobs.py): every task built in memory, Redis state initialised in
one pipeline, then chunks of 200 concurrent ``js.publish`` calls, each awaiting its PubAck.
Both publish the same N messages to a fresh stream of the same configuration.

    .venv/bin/python benchmarks/publish_bench.py --images 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from temporalio.testing import ActivityEnvironment

from activities.async_api.models import PublishInput
from activities.async_api.task_queue import TaskQueueActivities, task_message
from activities.images import ImageActivities
from activities.models import CollectInput, JobRef
from antenna_db import captures, job_store
from antenna_db.seed import SeedResult, seed
from benchmarks.harness import goal_line
from benchmarks.scratch import scratch_database
from core.settings import Settings
from worker.resources import Resources

ANTENNA_CHUNK = 200
GOAL_RATIO = 2.0
GOAL_COLLECT_PUBLISH_S = 20.0
GOAL_RSS_MIB = 300.0


async def antenna_publish(res: Resources, settings: Settings, job_id: int) -> float:
    """Antenna's queue_images_to_nats: all tasks in memory, chunks of 200 awaited publishes."""
    async with res.pool.connection() as conn:
        rows = await captures.image_page(conn, job_id, 0, 10**9)
    started = time.perf_counter()
    ids = [str(r["source_image_id"]) for r in rows]
    pipe = res.redis.pipeline(transaction=False)
    for stage in ("process", "results"):
        pipe.delete(settings.jobs.names.pending_key(job_id, stage))
        pipe.sadd(settings.jobs.names.pending_key(job_id, stage), *ids)
    pipe.set(settings.jobs.names.total_key(job_id), len(ids))
    await pipe.execute()
    subject = settings.jobs.names.subject(job_id)
    messages = [task_message(r["source_image_id"], r["url"]) for r in rows]
    for i in range(0, len(messages), ANTENNA_CHUNK):
        chunk = messages[i : i + ANTENNA_CHUNK]
        await asyncio.gather(*(res.js.publish(subject, body) for body in chunk))
    return time.perf_counter() - started


async def ours_publish(acts: TaskQueueActivities, job_id: int, total: int) -> float:
    started = time.perf_counter()
    result = await ActivityEnvironment().run(
        acts.publish_tasks, PublishInput(job_id=job_id, total=total)
    )
    assert result.published == total, result
    return time.perf_counter() - started


def _reset_peak_rss() -> None:
    """Start this process's peak RSS (VmHWM) again from its current RSS (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmHWM")


@dataclass
class Bench:
    settings: Settings
    res: Resources
    queue: TaskQueueActivities
    collect: ImageActivities
    seeded: SeedResult

    async def new_job(self) -> JobRef:
        async with self.res.pool.connection() as conn:
            job = await job_store.create_ml_job(conn, self.seeded.ml_job())
        return JobRef(job_id=job.id)


@asynccontextmanager
async def bench(images: int) -> AsyncIterator[Bench]:
    """The worker's resources and activities on a scratch database seeded with ``images``."""
    async with scratch_database() as db:
        settings = Settings(database=db)
        res = await Resources.open(settings, run_migrations=False)
        try:
            async with res.pool.connection() as conn:
                seeded = await seed(conn, images)
            yield Bench(
                settings,
                res,
                TaskQueueActivities(res.nc, res.js, res.redis, res.pool, settings),
                ImageActivities(res.pool, settings),
                seeded,
            )
        finally:
            await res.close()


async def collect_and_publish(images: int) -> None:
    """A job of ``images`` images collected and published as the worker does it, timed from the
    collect's start to the last PubAck, with the peak RSS of the process meanwhile."""
    async with bench(images) as b:
        ref = await b.new_job()
        _reset_peak_rss()
        base = _peak_rss_mib()
        started = time.perf_counter()
        collected = await ActivityEnvironment().run(
            b.collect.collect_images, CollectInput(job_id=ref.job_id)
        )
        collect_seconds = time.perf_counter() - started
        await ActivityEnvironment().run(b.queue.prepare_job_queue, ref)
        try:
            await ours_publish(b.queue, ref.job_id, images)
            seconds = time.perf_counter() - started
            peak = _peak_rss_mib()
            info = await b.res.js.stream_info(b.settings.jobs.names.stream(ref.job_id))
            assert info.state.messages == images, info.state.messages
        finally:
            await b.queue.remove(ref.job_id)
    print(
        goal_line(
            f"collect + publish {images} images",
            seconds,
            GOAL_COLLECT_PUBLISH_S,
            "s",
            lower_is_better=True,
        )
    )
    print(
        f"  collect {collect_seconds:.1f} s ({collected}),"
        f" publish {seconds - collect_seconds:.1f} s"
    )
    print(
        goal_line("  peak RSS meanwhile", peak, GOAL_RSS_MIB, "MiB", lower_is_better=True)
        + f" (from {base:.0f} MiB)"
    )


async def main(images: int, rounds: int) -> None:
    timings: dict[str, list[float]] = {"ours": [], "antenna": []}
    async with bench(images) as b:
        for _ in range(rounds):
            for method in ("antenna", "ours"):
                ref = await b.new_job()
                await ActivityEnvironment().run(
                    b.collect.collect_images, CollectInput(job_id=ref.job_id)
                )
                await ActivityEnvironment().run(b.queue.prepare_job_queue, ref)
                try:
                    if method == "ours":
                        seconds = await ours_publish(b.queue, ref.job_id, images)
                    else:
                        seconds = await antenna_publish(b.res, b.settings, ref.job_id)
                    info = await b.res.js.stream_info(b.settings.jobs.names.stream(ref.job_id))
                    assert info.state.messages == images, (method, info.state.messages)
                    timings[method].append(seconds)
                finally:
                    await b.queue.remove(ref.job_id)

    print(f"JetStream publish of {images} task messages, {rounds} rounds (median seconds)")
    rates = {}
    for method, label in (
        ("antenna", f"Antenna: chunks of {ANTENNA_CHUNK} concurrent js.publish"),
        ("ours", "ours: publish_tasks activity (PubAck window)"),
    ):
        median = statistics.median(timings[method])
        rates[method] = images / median
        print(f"  {label:58s} {median:7.2f} s  {rates[method]:9.0f} msgs/s")
    print(
        goal_line(
            "  ratio ours/antenna",
            rates["ours"] / rates["antenna"],
            GOAL_RATIO,
            "x",
            lower_is_better=False,
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--collect-publish", type=int, default=450_000, help="images of the collect+publish run"
    )
    args = parser.parse_args()
    asyncio.run(main(args.images, args.rounds))
    if args.collect_publish:
        asyncio.run(collect_and_publish(args.collect_publish))
