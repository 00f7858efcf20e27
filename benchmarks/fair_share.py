"""Fair share: when do a second project's small jobs finish while a big job runs?

Starts a Temporal dev server, a database, and per scenario one worker and one API of its own
(the API with fair share on or off), and four fake ADC workers in this process (each works a
listed job until ``/tasks/`` answers ``[]``, then polls the listing again; ``--delay`` s of
"inference" per batch of 24, four fetchers each, as the ADC's NUM_WORKERS). Scenarios:

- ``alone``: one job of project A (``--big`` images): its throughput.
- ``fair`` / ``unfair``: the same job of A, then ``--small-jobs`` jobs of project B (``--small``
  images each) started ``--stagger`` s later, with fair share on / off: when each B job ends
  (seconds after B was started), and A's throughput meanwhile.

    .venv/bin/python benchmarks/fair_share.py                      # the issue's sizes
    .venv/bin/python benchmarks/fair_share.py --big 4000 --small 100 --delay 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from harness import bench_settings, goal_line, own_database, own_temporal, stack, until

from antenna_db import users
from antenna_db.seed import SeedResult, new_capture_set, seed
from cli.fakes.worker import FakeWorker, FakeWorkerConfig
from core.job_requests import NewMlJob
from core.settings import DatabaseSettings
from core.temporal_client import connect_temporal
from job_control.actions import JobActions
from storage.pool import Pool, open_pool

# B's small jobs should end at least this many times sooner with fair share than without.
GOAL_SPEEDUP = 2.0


@dataclass
class Outcome:
    name: str
    # Seconds from each B job's start to its end.
    small_ends: list[float] = field(default_factory=list)
    big_seconds: float = 0.0
    big_images: int = 0
    small_done_while_big_ran: int = 0
    # A's images done (processed or failed) when the last B job ended.
    big_done_at_last_small: int = 0
    # Every job's images over the span from A's start to the last end.
    all_images: int = 0
    all_seconds: float = 0.0

    @property
    def big_rate(self) -> float:
        return self.big_images / self.big_seconds if self.big_seconds else 0.0


async def _split(pool: Pool, seeded: SeedResult, parts: int, size: int) -> list[int]:
    """``parts`` collections of ``size`` of the seeded project's captures (disjoint)."""
    collections = []
    async with pool.connection() as conn:
        for part in range(parts):
            collection = await new_capture_set(conn, seeded.project_id, f"part {part + 1}")
            await conn.execute(
                "INSERT INTO main_sourceimagecollection_images"
                " (sourceimagecollection_id, sourceimage_id)"
                " SELECT %s, sourceimage_id FROM main_sourceimagecollection_images"
                " WHERE sourceimagecollection_id = %s ORDER BY sourceimage_id"
                " OFFSET %s LIMIT %s",
                (collection, seeded.collection_id, part * size, size),
            )
            collections.append(collection)
    return collections


async def _done(pool: Pool, job_id: int) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT processed + failed AS n FROM job_runs WHERE job_id = %s", (job_id,)
        )
        row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def _times(pool: Pool, job_id: int) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, scheduled_at, started_at, finished_at FROM jobs_job WHERE id = %s",
            (job_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return dict(row)


async def scenario(name: str, db: DatabaseSettings, address: str, args: Any) -> Outcome:
    fair = name != "unfair"
    with_small = name != "alone"
    settings = bench_settings(
        db,
        address,
        fair_share={"enabled": fair},
        database={"pool_max_size": 20},
    )
    pool = await open_pool(settings.database)
    client = await connect_temporal(settings.temporal)
    outcome = Outcome(name)
    try:
        async with pool.connection() as conn:
            big_seed = await seed(conn, args.big)
            small_seed = await seed(conn, args.small * args.small_jobs)
            token = await users.create_token_user(conn, f"fair-{name}", superuser=True)
        small_collections = await _split(pool, small_seed, args.small_jobs, args.small)
        async with stack(settings) as running:
            running.worker()
            api_url = await running.api()
            actions = JobActions(pool, client, settings)
            fakes = [
                FakeWorker(
                    FakeWorkerConfig(
                        api_url=api_url,
                        token=token,
                        seed=n,
                        concurrency=4,
                        batch_size=24,
                        delay=args.delay,
                        poll_interval=1.0,
                        pipelines=[big_seed.pipeline_slug, small_seed.pipeline_slug],
                    )
                )
                for n in range(args.workers)
            ]
            tasks = [asyncio.create_task(f.run()) for f in fakes]
            try:
                big = await actions.create(
                    NewMlJob(
                        project_id=big_seed.project_id,
                        pipeline_slug=big_seed.pipeline_slug,
                        collection_id=big_seed.collection_id,
                    ),
                    start=True,
                )
                small_ids: list[int] = []
                if with_small:
                    await asyncio.sleep(args.stagger)  # the "started 5 s later"
                    for collection in small_collections:
                        job = await actions.create(
                            NewMlJob(
                                project_id=small_seed.project_id,
                                pipeline_slug=small_seed.pipeline_slug,
                                collection_id=collection,
                            ),
                            start=True,
                        )
                        small_ids.append(job.id)
                small_started = time.monotonic()
                pending = set(small_ids)
                ended_while_big_ran = 0

                async def all_final() -> bool:
                    nonlocal ended_while_big_ran
                    running.check()
                    big_status = (await _times(pool, big.id))["status"]
                    big_done = await _done(pool, big.id)
                    for job_id in sorted(pending):
                        if (await _times(pool, job_id))["status"] in {"SUCCESS", "FAILURE"}:
                            pending.discard(job_id)
                            if big_status not in {"SUCCESS", "FAILURE"}:
                                ended_while_big_ran += 1
                            outcome.big_done_at_last_small = big_done
                            print(
                                f"  [{name}] B job {job_id} ended"
                                f" {time.monotonic() - small_started:.1f} s after B started"
                                f" (A {big_status}, {big_done} of {args.big} done)",
                                flush=True,
                            )
                    return not pending and big_status in {"SUCCESS", "FAILURE"}

                await until(all_final, within=args.timeout, what=f"{name}: every job final")
            finally:
                for f in fakes:
                    f.stop()
                await asyncio.gather(*tasks, return_exceptions=True)
            big_row = await _times(pool, big.id)
            outcome.big_seconds = (big_row["finished_at"] - big_row["started_at"]).total_seconds()
            outcome.big_images = args.big
            outcome.small_done_while_big_ran = ended_while_big_ran
            for job_id in small_ids:
                row = await _times(pool, job_id)
                outcome.small_ends.append(
                    (row["finished_at"] - row["scheduled_at"]).total_seconds()
                )
            rows = [big_row] + [await _times(pool, j) for j in small_ids]
            outcome.all_images = args.big + args.small * len(small_ids)
            outcome.all_seconds = (
                max(r["finished_at"] for r in rows) - big_row["started_at"]
            ).total_seconds()
            statuses = {big_row["status"]} | {(await _times(pool, j))["status"] for j in small_ids}
            if statuses != {"SUCCESS"}:
                raise RuntimeError(f"{name}: jobs ended {statuses}")
    finally:
        await pool.close()
    return outcome


def report(outcome: Outcome, alone: Outcome | None) -> None:
    line = f"{outcome.name}: A {outcome.big_images} images in {outcome.big_seconds:.1f} s"
    line += f" ({outcome.big_rate:.0f} images/s"
    if alone is not None and outcome is not alone and alone.big_rate:
        line += f", {outcome.big_rate / alone.big_rate:.2f}x A alone"
    line += ")"
    print(line)
    if outcome.small_ends:
        rate = outcome.all_images / outcome.all_seconds if outcome.all_seconds else 0.0
        print(
            f"  all jobs: {outcome.all_images} images in {outcome.all_seconds:.1f} s ({rate:.0f}"
            " images/s)"
        )
        ends = sorted(outcome.small_ends)
        print(
            f"  B jobs ended {', '.join(f'{e:.1f}' for e in ends)} s after they were started"
            f" (last {ends[-1]:.1f} s); {outcome.small_done_while_big_ran} of {len(ends)}"
            f" ended before A did; A had {outcome.big_done_at_last_small} of"
            f" {outcome.big_images} images done when the last ended"
        )


async def main(args: Any) -> None:
    results: dict[str, Outcome] = {}
    async with own_temporal() as address, own_database() as db:
        for name in args.scenarios:
            print(f"scenario {name} ...", flush=True)
            results[name] = await scenario(name, db, address, args)
    print()
    print(
        f"{args.workers} fake ADC workers x 4 fetchers x 24 images, {args.delay} s per batch;"
        f" A: 1 job of {args.big}; B: {args.small_jobs} jobs of {args.small},"
        f" {args.stagger} s later"
    )
    alone = results.get("alone")
    for outcome in results.values():
        report(outcome, alone)
    fair, unfair = results.get("fair"), results.get("unfair")
    if fair and unfair and fair.small_ends and unfair.small_ends:
        last_fair, last_unfair = max(fair.small_ends), max(unfair.small_ends)
        print(
            f"last B job ends {last_unfair / last_fair:.1f}x sooner with fair share"
            f" ({last_fair:.1f} s vs {last_unfair:.1f} s without)"
        )
        print(
            goal_line(
                "last B job's end, without / with fair share",
                last_unfair / last_fair,
                GOAL_SPEEDUP,
                "x",
                lower_is_better=False,
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=20_000, help="images of A's job")
    parser.add_argument("--small", type=int, default=200, help="images of each B job")
    parser.add_argument("--small-jobs", type=int, default=5)
    parser.add_argument("--stagger", type=float, default=5.0, help="s between A and B")
    parser.add_argument("--workers", type=int, default=4, help="fake ADC workers")
    parser.add_argument("--delay", type=float, default=1.0, help="s of inference per batch")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=["alone", "fair", "unfair"],
        choices=["alone", "fair", "unfair"],
    )
    asyncio.run(main(parser.parse_args()))
