"""Big results flow: a result post as big as the real ones, answered, then saved.

The 29,176-class moths model posts 110-150 MB per batch of 24 images (benchmarks/big_body.py).
Starts a Temporal dev server, a database, a worker and (per body size) an API of its own; runs two
real async jobs: one of 24 images whose tasks the big body answers, and one of 8,000 images that
a poller asks for a task every 20 ms while the big post is in flight. Prints per size:

- the time from sending the body to the answer, and the API's peak RSS against the body size,
- p50/p99/max of the concurrent ``/tasks/`` calls,
- how long the worker took to save the 24 images (answer -> all saved), in images/s, and its RSS.

    .venv/bin/python benchmarks/big_results.py --size-mb 64 142
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
from big_body import build_body
from harness import (
    bench_settings,
    goal_line,
    own_database,
    own_temporal,
    profiled,
    published,
    stack,
    top_frames,
    until,
)

from antenna_db import users
from antenna_db.seed import seed
from cli.fakes.worker import api_base
from core.temporal_client import connect_temporal
from job_control.actions import JobActions
from storage.pool import open_pool

IMAGES = 24
POLLED_IMAGES = 8000
POLL_INTERVAL = 0.02
GOAL_ANSWER_S = 2.0
GOAL_RSS_X = 3.0
GOAL_P99_MS = 200.0
GOAL_SAVE_IMG_S = 50.0


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


@dataclass
class Figures:
    body_bytes: int
    status: int
    answer_seconds: float
    rss_before: int
    peak_rss: int
    latencies: list[float]
    save_seconds: float
    worker_rss_mib: float

    def lines(self) -> list[str]:
        lat = sorted(self.latencies) or [float("nan")]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        mb = self.body_bytes / 1e6
        growth = (self.peak_rss - self.rss_before) / self.body_bytes
        rate = IMAGES / self.save_seconds if self.save_seconds else 0.0
        return [
            f"body {mb:.1f} MB -> HTTP {self.status}; API RSS before"
            f" {self.rss_before / 1e6:.0f} MB, peak {self.peak_rss / 1e6:.0f} MB;"
            f" {len(lat)} concurrent /tasks/ p50 {statistics.median(lat) * 1000:.0f} ms,"
            f" max {lat[-1] * 1000:.0f} ms; worker peak RSS {self.worker_rss_mib:.0f} MiB",
            "  "
            + goal_line(
                f"{mb:.0f} MB post answered in",
                self.answer_seconds,
                GOAL_ANSWER_S,
                "s",
                lower_is_better=True,
            ),
            "  "
            + goal_line(
                "API peak RSS growth / body", growth, GOAL_RSS_X, "x", lower_is_better=True
            ),
            "  "
            + goal_line(
                "concurrent /tasks/ p99", p99 * 1000, GOAL_P99_MS, "ms", lower_is_better=True
            ),
            "  "
            + goal_line(
                f"saved {IMAGES} images ({self.save_seconds:.2f} s)",
                rate,
                GOAL_SAVE_IMG_S,
                "images/s",
                lower_is_better=False,
            ),
        ]


async def _poll_tasks(
    http: httpx.AsyncClient, job_id: int, stop: asyncio.Event, out: list[float]
) -> None:
    """Open loop: a new call every POLL_INTERVAL whether or not the last one answered, so a
    stalled API shows as many slow calls (not one), as it does to several polling workers."""

    async def one() -> None:
        started = time.perf_counter()
        response = await http.post(f"/jobs/{job_id}/tasks/", json={"batch_size": 1})
        response.raise_for_status()
        out.append(time.perf_counter() - started)

    calls = []
    while not stop.is_set():
        calls.append(asyncio.create_task(one()))
        await asyncio.sleep(POLL_INTERVAL)
    await asyncio.gather(*calls)


async def run(sizes: list[float], profile: Path | None) -> None:
    async with own_temporal() as address, own_database() as db:
        # The poller never acks what it fetches: let it hold that many tasks.
        settings = bench_settings(db, address, nats={"max_ack_pending": 100_000})
        pool = await open_pool(settings.database)
        client = await connect_temporal(settings.temporal)
        nc = await nats.connect(settings.nats.url)
        actions = JobActions(pool, client, settings)
        try:
            async with pool.connection() as conn:
                token = await users.create_token_user(conn, "big-results", superuser=True)
            async with stack(settings) as running:
                running.worker()
                worker = running.children[0]
                for n, size in enumerate(sizes):
                    async with pool.connection() as conn:
                        big_seed = await seed(conn, IMAGES)
                        polled_seed = await seed(conn, POLLED_IMAGES)
                    jobs = []
                    for s in (big_seed, polled_seed):
                        new = s.ml_job()
                        jobs.append((await actions.create(new, start=True)).id)
                    big, polled = jobs
                    url = await running.api(n + 1)
                    api = running.children[-1]
                    figures = await _one(
                        pool, nc, settings, url, token, big, polled, size, api, worker, profile
                    )
                    for line in figures.lines():
                        print(line, flush=True)
                    await actions.cancel(polled, reason="benchmark done")
                    running.stop_child(api)
        finally:
            await nc.drain()
            await pool.close()


async def _one(
    pool: Any,
    nc: Any,
    settings: Any,
    url: str,
    token: str,
    big: int,
    polled: int,
    size: float,
    api: Any,
    worker: Any,
    profile: Path | None,
) -> Figures:
    names = settings.jobs.names
    await until(
        lambda: published(nc, names, {big: IMAGES, polled: POLLED_IMAGES}),
        within=120,
        what="both jobs published",
    )
    headers = {"Authorization": f"Token {token}"}
    base = api_base(url)
    async with (
        httpx.AsyncClient(base_url=base, headers=headers, timeout=300) as poster,
        httpx.AsyncClient(
            base_url=base,
            headers=headers,
            timeout=300,
            limits=httpx.Limits(max_connections=2000, max_keepalive_connections=50),
        ) as poller,
    ):
        response = await poster.post(f"/jobs/{big}/tasks/", json={"batch_size": IMAGES})
        tasks = response.json()["tasks"]
        assert len(tasks) == IMAGES, response.text
        body = build_body(tasks, size)
        body_bytes = len(body)
        # Warm up both paths (imports, pools, the task fetcher's subscription).
        await poller.post(f"/jobs/{polled}/tasks/", json={"batch_size": 1})
        await poster.post(f"/jobs/{big}/result/", json={"results": []})

        rss_before = _status(api.proc.pid, "VmRSS")
        stop = asyncio.Event()
        latencies: list[float] = []
        polling = asyncio.create_task(_poll_tasks(poller, polled, stop, latencies))
        started = time.perf_counter()
        async with profiled(api.proc.pid, profile and profile / f"api-{size:.0f}mb.txt"):
            response = await poster.post(
                f"/jobs/{big}/result/",
                content=body,
                headers={"Content-Type": "application/json"},
            )
        answer = time.perf_counter() - started
        answered = time.monotonic()
        stop.set()
        await polling
        peak = _status(api.proc.pid, "VmHWM")
        del body

    async def saved() -> bool:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT processed + failed AS n FROM job_runs WHERE job_id = %s", (big,)
            )
            row = await cur.fetchone()
        return bool(row and row["n"] >= IMAGES)

    async with profiled(worker.proc.pid, profile and profile / f"worker-{size:.0f}mb.txt"):
        await until(saved, within=600, what="the big batch saved", every=0.05)
    save_seconds = time.monotonic() - answered
    return Figures(
        body_bytes,
        response.status_code,
        answer,
        rss_before,
        peak,
        latencies,
        save_seconds,
        worker.peak_rss_mib(),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, nargs="+", default=[64.0])
    parser.add_argument(
        "--profile", type=Path, help="write py-spy collapsed stacks of the API and the worker here"
    )
    args = parser.parse_args()
    asyncio.run(run(args.size_mb, args.profile))
    if args.profile:
        for out in sorted(args.profile.glob("*.txt")):
            print(f"== {out}")
            print("\n".join(top_frames(out)))
