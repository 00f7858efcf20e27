"""Latency of /tasks/ and /result/ at the ADC's batch size (24), in-process (httpx ASGITransport).

Prints the figures (run with ``-s`` to see them); the assertion is only a loose regression bound.
"""

from __future__ import annotations

import statistics
import time

from core.states import JobState
from tests.helpers import eventually
from tests.helpers.api import Api
from tests.helpers.jobs import entry, make_job, success_result

BATCH = 24
ROUNDS = 30


def _summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return (
        f"{name}: p50 {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms,"
        f" max {ordered[-1] * 1000:.1f} ms over {len(ordered)} requests"
    )


async def test_tasks_and_result_latency_batch_24(api: Api, pool, streams):
    job = await make_job(pool, images=BATCH * ROUNDS, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    fetch_times: list[float] = []
    post_times: list[float] = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        response = await api.client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": BATCH})
        fetch_times.append(time.perf_counter() - started)
        tasks = response.json()["tasks"]
        assert len(tasks) == BATCH

        body = {"results": [entry(t, success_result(t, detections=3)) for t in tasks]}
        started = time.perf_counter()
        response = await api.client.post(f"/jobs/{job.id}/result/", json=body)
        post_times.append(time.perf_counter() - started)
        assert response.json()["results_queued"] == BATCH

    print()
    print(_summary("POST /tasks/ batch 24", fetch_times))
    print(_summary("POST /result/ 24 results x 3 detections", post_times))
    assert statistics.median(fetch_times) < 0.25
    assert statistics.median(post_times) < 0.5

    async def all_acked() -> bool:
        info = await streams.consumer(job.id)
        return info.num_ack_pending == 0 and info.num_pending == 0

    await eventually(all_acked)
