"""Scale-out: one job's load shared by two API processes and two worker processes.

Runs the same job (N images, fake ADC workers as processes of their own) twice in one run: on
one API process and one worker process (the baseline), then on ``api --workers 2`` and two
worker processes (one task queue), each in a fresh collection. Checks that the counts are exact
(every image processed or failed exactly once, the job SUCCESS) and prints the throughput of
both and their ratio.

    .venv/bin/python benchmarks/scale_out.py --images 20000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

from harness import bench_settings, own_database, own_temporal, stack, statuses, until

from antenna_db import results, users
from antenna_db.seed import seed
from core.db import open_pool
from core.job_requests import NewMlJob
from core.settings import DatabaseSettings
from core.temporal_client import connect_temporal
from job_control.actions import JobActions


@dataclass
class Run:
    processes: int
    seconds: float
    processed: int
    failed: int
    detections: int
    status: str

    def rate(self, images: int) -> float:
        return images / self.seconds


async def one(db: DatabaseSettings, address: str, images: int, n: int, fakes: int) -> Run:
    settings = bench_settings(db, address, database={"pool_max_size": 20})
    pool = await open_pool(settings.database)
    client = await connect_temporal(settings.temporal)
    try:
        async with pool.connection() as conn:
            seeded = await seed(conn, images)
            token = await users.create_token_user(conn, f"scale-{n}", superuser=True)
        async with stack(settings) as running:
            for i in range(n):
                running.worker(i + 1)
            api_url = await running.api(workers=n)
            actions = JobActions(pool, client, settings)
            new = NewMlJob(
                project_id=seeded.project_id,
                pipeline_slug=seeded.pipeline_slug,
                collection_id=seeded.collection_id,
            )
            started = time.monotonic()
            job = await actions.create(new, start=True)
            running.fake_workers(fakes, api_url, token)

            async def final() -> bool:
                running.check()
                async with pool.connection() as conn:
                    counts = await statuses(conn, [job.id])
                return bool(counts.keys() & {"SUCCESS", "FAILURE", "REVOKED"})

            await until(final, within=60 + images / 50, what=f"job {job.id} final", every=0.2)
            seconds = time.monotonic() - started
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT processed, failed FROM job_runs WHERE job_id = %s", (job.id,)
            )
            row = await cur.fetchone()
            assert row is not None
            detections, _ = await results.job_result_counts(conn, job.id)
            status = next(iter(await statuses(conn, [job.id])))
        return Run(n, seconds, int(row["processed"]), int(row["failed"]), detections, status)
    finally:
        await pool.close()


async def run(images: int, fakes: int) -> None:
    async with own_temporal() as address, own_database() as db:
        runs = [await one(db, address, images, n, fakes) for n in (1, 2)]
    for r in runs:
        exact = r.processed + r.failed == images and r.status == "SUCCESS"
        print(
            f"{r.processes} API process(es) + {r.processes} worker(s): {images} images in"
            f" {r.seconds:.1f} s ({r.rate(images):.0f} images/s), {r.status}, processed"
            f" {r.processed} + failed {r.failed}, {r.detections} detections"
            f" ({'exact' if exact else 'NOT exact'})"
        )
    base, scaled = runs
    print(f"  throughput 2 vs 1: {scaled.rate(images) / base.rate(images):.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--fakes", type=int, default=4, help="fake ADC worker processes")
    args = parser.parse_args()
    asyncio.run(run(args.images, args.fakes))
