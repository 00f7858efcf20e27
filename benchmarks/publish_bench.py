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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from temporalio.testing import ActivityEnvironment

from activities.async_api.models import PublishInput
from activities.async_api.task_queue import TaskQueueActivities, task_message
from activities.images import ImageActivities
from activities.models import JobRef
from antenna_db import captures, job_store
from antenna_db.seed import seed
from benchmarks.scratch import scratch_database
from core.job_requests import NewMlJob
from core.settings import Settings
from worker.resources import Resources

ANTENNA_CHUNK = 200


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


async def main(images: int, rounds: int) -> None:
    timings: dict[str, list[float]] = {"ours": [], "antenna": []}
    async with scratch_database() as db:
        settings = Settings(database=db)
        res = await Resources.open(settings, run_migrations=False)
        queue = TaskQueueActivities(res.nc, res.js, res.redis, res.pool, settings)
        collect = ImageActivities(res.pool, settings)
        try:
            async with res.pool.connection() as conn:
                seeded = await seed(conn, images)
            for _ in range(rounds):
                for method in ("antenna", "ours"):
                    async with res.pool.connection() as conn:
                        job = await job_store.create_ml_job(
                            conn,
                            NewMlJob(
                                project_id=seeded.project_id,
                                pipeline_slug=seeded.pipeline_slug,
                                collection_id=seeded.collection_id,
                            ),
                        )
                    ref = JobRef(job_id=job.id)
                    await ActivityEnvironment().run(collect.collect_images, ref)
                    await ActivityEnvironment().run(queue.prepare_job_queue, ref)
                    try:
                        if method == "ours":
                            seconds = await ours_publish(queue, job.id, images)
                        else:
                            seconds = await antenna_publish(res, settings, job.id)
                        info = await res.js.stream_info(settings.jobs.names.stream(job.id))
                        assert info.state.messages == images, (method, info.state.messages)
                        timings[method].append(seconds)
                    finally:
                        await queue.remove(job.id)
        finally:
            await res.close()

    print(f"JetStream publish of {images} task messages, {rounds} rounds (median seconds)")
    rates = {}
    for method, label in (
        ("antenna", f"Antenna: chunks of {ANTENNA_CHUNK} concurrent js.publish"),
        ("ours", "ours: publish_tasks activity (PubAck window)"),
    ):
        median = statistics.median(timings[method])
        rates[method] = images / median
        print(f"  {label:58s} {median:7.2f} s  {rates[method]:9.0f} msgs/s")
    print(f"  ratio ours/antenna: {rates['ours'] / rates['antenna']:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.images, args.rounds))
