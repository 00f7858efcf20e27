"""Many jobs at once: N jobs of K images started together, answered by fake ADC workers.

Starts a Temporal dev server, a database, one worker and one API of its own; creates and starts N
jobs (200 x 50 by default) at once, with four fake ADC worker processes polling the listing as
the ADC does. Prints the time from the first start to the last job final, how many ended
SUCCESS, and the PostgreSQL transactions per image over the whole run (``pg_stat_database`` of
the run's own database).

    .venv/bin/python benchmarks/many_jobs.py --jobs 200 --images 50
"""

from __future__ import annotations

import argparse
import asyncio
import time

import psycopg
from harness import (
    connected,
    goal_line,
    many_jobs_settings,
    own_database,
    own_temporal,
    stack,
    statuses,
    transactions,
    until,
)

from antenna_db.seed import seed

FINAL = {"SUCCESS", "FAILURE", "REVOKED"}


async def run(jobs: int, images: int, fakes: int) -> None:
    async with own_temporal() as address, own_database() as db:
        settings = many_jobs_settings(db, address, jobs)
        async with (
            connected(settings, "many-jobs-bench") as clients,
            stack(settings) as running,
            await psycopg.AsyncConnection.connect(settings.database.url, autocommit=True) as probe,
        ):
            pool = clients.pool
            async with pool.connection() as conn:
                seeded = await seed(conn, images)
            running.worker()
            api_url = await running.api()
            actions = clients.actions()
            before = await transactions(probe)
            started = time.monotonic()
            job_ids = [(await actions.create(seeded.ml_job(), start=True)).id for _ in range(jobs)]
            took = time.monotonic() - started
            print(f"{jobs} jobs of {images} images started in {took:.1f} s")
            running.fake_workers(fakes, api_url, clients.token)

            async def all_final() -> bool:
                running.check()
                async with pool.connection() as conn:
                    counts = await statuses(conn, job_ids)
                return sum(n for s, n in counts.items() if s in FINAL) == jobs

            await until(all_final, within=300 + 5 * jobs, what="every job final", every=0.5)
            elapsed = time.monotonic() - started
            await asyncio.sleep(1.5)  # statistics are flushed at most once a second
            spent = await transactions(probe) - before
            async with pool.connection() as conn:
                counts = await statuses(conn, job_ids)
            worker_rss = running.children[0].peak_rss_mib()
    total = jobs * images
    print(
        goal_line(
            f"{jobs} jobs x {images} images ending SUCCESS",
            counts.get("SUCCESS", 0),
            jobs,
            "jobs",
            lower_is_better=False,
        )
    )
    print(
        f"  last job final {elapsed:.1f} s after the first start ({total / elapsed:.0f} images/s);"
        f" statuses {counts}"
    )
    print(
        f"  Postgres transactions: {spent} in all, {spent / total:.2f} per image;"
        f" worker peak RSS {worker_rss:.0f} MiB"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--fakes", type=int, default=4, help="fake ADC worker processes")
    args = parser.parse_args()
    asyncio.run(run(args.jobs, args.images, args.fakes))
