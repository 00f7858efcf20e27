"""Waiting costs nothing: N started async jobs with no processing worker, on one worker process.

Starts a Temporal dev server, a database, one worker and one API of its own; creates and starts N
jobs of K images each; once every job's tasks are published (each aggregator waiting), counts
PostgreSQL transactions over a window (``pg_stat_database`` of the run's own database). Then,
for a sample of jobs, fetches their tasks over HTTP, posts their results and measures how long
the aggregator takes to save them (wake-up + save). Finally fake ADC workers answer every job and
the script waits for all N to end SUCCESS.

    .venv/bin/python benchmarks/idle_jobs.py --jobs 500 --window 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import httpx
import nats
import psycopg
from harness import (
    goal_line,
    many_jobs_settings,
    own_database,
    own_temporal,
    published,
    stack,
    transactions,
    until,
)

from antenna_db import users
from antenna_db.seed import seed
from cli.fakes.results import build_result
from cli.fakes.worker import FakeWorker, FakeWorkerConfig, api_base
from core.schemas import PipelineProcessingTask
from core.temporal_client import connect_temporal
from job_control.actions import JobActions
from storage.pool import connect_kwargs, open_pool

GOAL_TX_PER_S = 100.0
GOAL_WAKE_MS = 100.0


async def _done(conn: Any, job_id: int) -> int:
    cur = await conn.execute(
        "SELECT coalesce(processed, 0) + coalesce(failed, 0) AS n FROM job_runs WHERE job_id = %s",
        (job_id,),
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def _wake_latency(
    http: httpx.AsyncClient, conn: Any, job_id: int, slug: str, images: int
) -> float:
    """From the result POST's answer to the aggregator having saved every image of it."""
    response = await http.post(f"/jobs/{job_id}/tasks/", json={"batch_size": images})
    response.raise_for_status()
    tasks = [PipelineProcessingTask.model_validate(t) for t in response.json()["tasks"]]
    body = {"results": [build_result(t, slug).model_dump(mode="json") for t in tasks]}
    answered = await http.post(f"/jobs/{job_id}/result/", json=body)
    answered.raise_for_status()
    posted = time.perf_counter()
    while await _done(conn, job_id) < len(tasks):  # noqa: ASYNC110 (watching another process)
        await asyncio.sleep(0.002)
    return time.perf_counter() - posted


async def run(jobs: int, images: int, window: float, samples: int) -> None:
    async with own_temporal() as address, own_database() as db:
        settings = many_jobs_settings(db, address, jobs)
        pool = await open_pool(settings.database)
        client = await connect_temporal(settings.temporal)
        nc = await nats.connect(settings.nats.url)
        names = settings.jobs.names
        try:
            async with pool.connection() as conn:
                seeded = await seed(conn, images)
                token = await users.create_token_user(conn, "idle-bench", superuser=True)
            async with stack(settings) as running:
                running.worker()
                api_url = await running.api()
                actions = JobActions(pool, client, settings)
                started = time.monotonic()
                job_ids = []
                for _ in range(jobs):
                    new = seeded.ml_job()
                    job_ids.append((await actions.create(new, start=True)).id)
                await until(
                    lambda: published(nc, names, dict.fromkeys(job_ids, images)),
                    within=60 + jobs,
                    what="every job published",
                    every=1.0,
                )
                print(
                    f"{jobs} jobs of {images} images started and published in"
                    f" {time.monotonic() - started:.1f} s"
                )
                await asyncio.sleep(5)  # let every aggregator reach its wait
                async with await psycopg.AsyncConnection.connect(
                    settings.database.url, autocommit=True
                ) as probe:
                    before = await transactions(probe)
                    t0 = time.monotonic()
                    await asyncio.sleep(window)
                    running.check()
                    after = await transactions(probe)
                    elapsed = time.monotonic() - t0
                rate = (after - before) / elapsed
                print(
                    goal_line(
                        f"{jobs} waiting jobs, Postgres transactions/s",
                        rate,
                        GOAL_TX_PER_S,
                        "tx/s",
                        lower_is_better=True,
                    )
                )
                print(
                    f"  per waiting job: {rate / jobs:.3f} tx/s"
                    f" ({(after - before)} transactions in {elapsed:.1f} s)"
                )

                headers = {"Authorization": f"Token {token}"}
                latencies = []
                async with (
                    httpx.AsyncClient(
                        base_url=api_base(api_url), headers=headers, timeout=30
                    ) as http,
                    await psycopg.AsyncConnection.connect(
                        settings.database.url, **connect_kwargs(settings.database)
                    ) as conn,
                ):
                    for job_id in job_ids[:samples]:
                        latencies.append(
                            await _wake_latency(http, conn, job_id, seeded.pipeline_slug, images)
                        )
                        await asyncio.sleep(0.3)  # one at a time, the others still waiting
                ms = sorted(x * 1000 for x in latencies)
                print(
                    goal_line(
                        "result posted -> saved (median)",
                        statistics.median(ms),
                        GOAL_WAKE_MS,
                        "ms",
                        lower_is_better=True,
                    )
                )
                print(f"  n={len(ms)} min {ms[0]:.0f} ms, max {ms[-1]:.0f} ms")

                fakes = [
                    FakeWorker(
                        FakeWorkerConfig(
                            api_url=api_url, token=token, seed=n, concurrency=4, poll_interval=0.5
                        )
                    )
                    for n in range(2)
                ]
                tasks = [asyncio.create_task(f.run()) for f in fakes]
                t1 = time.monotonic()

                async def all_final() -> bool:
                    async with pool.connection() as conn:
                        cur = await conn.execute(
                            "SELECT status, count(*) AS n FROM jobs_job WHERE id = ANY(%s)"
                            " GROUP BY status",
                            (job_ids,),
                        )
                        counts = {r["status"]: r["n"] for r in await cur.fetchall()}
                    running.check()
                    final = sum(n for s, n in counts.items() if s in {"SUCCESS", "FAILURE"})
                    return final == jobs

                try:
                    await until(all_final, within=600, what="every job final", every=1.0)
                finally:
                    for f in fakes:
                        f.stop()
                    await asyncio.gather(*tasks, return_exceptions=True)
                async with pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT count(*) AS n FROM jobs_job WHERE id = ANY(%s)"
                        " AND status = 'SUCCESS'",
                        (job_ids,),
                    )
                    ok = (await cur.fetchone())["n"]
                print(
                    f"answered: {ok} of {jobs} jobs SUCCESS {time.monotonic() - t1:.1f} s"
                    f" after the workers came; worker peak RSS"
                    f" {running.children[0].peak_rss_mib():.0f} MiB"
                )
        finally:
            await nc.drain()
            await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(run(args.jobs, args.images, args.window, args.samples))
