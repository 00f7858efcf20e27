"""A processing worker that fetches tasks over HTTP and never answers some of them.

With max_deliver reachable: each such task comes back after ack_wait (the worker sees it twice),
then JetStream gives up and its image is counted failed; the job ends with exact counts. With
max_deliver out of reach: nothing more moves, and after the stall period the rest is counted
failed. Either way the job finishes, and the job log says why.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import pytest

from antenna_db import job_store
from core.states import JobState
from job_control.actions import JobActions
from tests.helpers.api import app_with_workers
from tests.helpers.chaos import pick, record_recovery, wait_final
from tests.helpers.db import create_token
from tests.helpers.jobs import make_job, success_result
from tests.helpers.settings import with_settings

pytestmark = pytest.mark.chaos


@dataclass
class SelectiveWorker:
    """Answers every task over HTTP except those of ``ignored`` images, which it drops."""

    http: httpx.AsyncClient
    job_id: int
    ignored: set[int]
    fetched: Counter[int] = field(default_factory=Counter)
    last_answer: float = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            response = await self.http.post(f"/jobs/{self.job_id}/tasks/", json={"batch_size": 8})
            tasks = response.json()["tasks"]
            if not tasks:
                await asyncio.sleep(0.1)  # nothing out right now: poll again
                continue
            answers = []
            for task in tasks:
                image = int(task["image_id"])
                self.fetched[image] += 1
                if image not in self.ignored:
                    answers.append(
                        {"reply_subject": task["reply_subject"], "result": success_result(task)}
                    )
            if answers:
                posted = await self.http.post(
                    f"/jobs/{self.job_id}/result/", json={"results": answers}
                )
                assert posted.status_code == 200, posted.text
                self.last_answer = time.monotonic()


async def run_job(pool, temporal_client, settings, images: int, ignore_every: int):
    job, _, _ = await make_job(pool, images=images)
    async with pool.connection() as conn:
        key = await create_token(conn, "selective worker")
        cur = await conn.execute(
            "SELECT sourceimage_id AS source_image_id FROM main_sourceimagecollection_images"
            " WHERE sourceimagecollection_id = %s",
            (job.collection_id,),
        )
        ids = sorted(r["source_image_id"] for r in await cur.fetchall())
    ignored = set(ids[::ignore_every])
    stop = asyncio.Event()
    async with app_with_workers(settings, pool, temporal_client, key) as http:
        worker = SelectiveWorker(http, job.id, ignored)
        loop = asyncio.create_task(worker.run(stop))
        await JobActions(pool, temporal_client, settings).run(job.id)
        status = await wait_final(pool, job.id, within=120)
        finished = time.monotonic()
        stop.set()
        await loop
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT source_image_id, status, error FROM job_images WHERE job_id = %s", (job.id,)
        )
        rows = list(await cur.fetchall())
        logs = [r["message"] for r in await job_store.latest_logs(conn, job.id, 100)]
        done = await job_store.get_job(conn, job.id)
    return done, status, rows, logs, worker, finished - worker.last_answer


async def test_unanswered_tasks_are_redelivered_then_counted_failed(
    pool, temporal_client, settings
):
    settings = with_settings(
        settings,
        nats={"ack_wait": timedelta(seconds=1.5), "max_deliver": 2},
        jobs={"stall_period": timedelta(minutes=5)},
    )
    done, status, rows, logs, worker, tail = await run_job(
        pool, temporal_client, settings, pick(60, 600), ignore_every=6
    )
    assert status == JobState.SUCCESS
    failed = {r["source_image_id"]: r["error"] for r in rows if r["status"] == "failed"}
    assert set(failed) == worker.ignored
    assert all("delivered 2 times" in e for e in failed.values())
    # Redelivered once after ack_wait, then never again.
    assert {worker.fetched[i] for i in worker.ignored} == {2}
    assert {worker.fetched[i] for i in set(worker.fetched) - worker.ignored} == {1}
    process = done.progress.stage("process")
    assert (process.param("processed"), process.param("failed")) == (len(rows), len(failed))
    assert any("exhausted max_deliver" in m for m in logs)
    record_recovery("unanswered tasks: max_deliver (last answer to final)", tail)


async def test_a_stall_is_ended_by_the_stall_period(pool, temporal_client, settings):
    stall = timedelta(seconds=3)
    settings = with_settings(
        settings,
        nats={"ack_wait": timedelta(seconds=60), "max_deliver": 5},
        jobs={"stall_period": stall},
    )
    _done, status, rows, logs, worker, tail = await run_job(
        pool, temporal_client, settings, pick(60, 600), ignore_every=10
    )
    assert status == JobState.SUCCESS
    failed = {r["source_image_id"]: r["error"] for r in rows if r["status"] == "failed"}
    assert set(failed) == worker.ignored
    assert all(e.startswith("no result for") for e in failed.values())
    assert any(m.startswith(f"Stalled: {len(failed)} images counted failed") for m in logs)
    # Finished once the stall period had passed after the last result, not much later.
    assert stall.total_seconds() <= tail < stall.total_seconds() + 5
    record_recovery("unanswered tasks: stall period 3 s (last answer to final)", tail)
