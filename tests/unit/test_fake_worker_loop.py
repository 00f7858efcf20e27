"""The fake worker's HTTP loop against an in-process stand-in of the worker-facing API."""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque

import httpx

from cli.fakes.results import JobCounts, result_document
from cli.fakes.worker import FakeWorker, FakeWorkerConfig
from core.schemas import PipelineProcessingTask, PipelineTaskResult

TOKEN = "test-key"
JOB = 42
SLUG = "fake-pipeline-x"


class StubApi:
    """Serves one job's tasks once each, records every posted result, can fail posts."""

    def __init__(self, images: int, fail_posts: int = 0) -> None:
        self.queue = deque(
            PipelineProcessingTask(
                id=str(i), image_id=str(i), image_url=f"http://img/{i}.jpg", reply_subject=f"r.{i}"
            )
            for i in range(1, images + 1)
        )
        self.posted: list[PipelineTaskResult] = []
        self.batch_sizes: list[int] = []
        self.listings: list[httpx.QueryParams] = []
        self.fail_posts = fail_posts
        self.polled_thrice = asyncio.Event()

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == f"Token {TOKEN}"
        path = request.url.path
        if request.method == "GET" and path == "/api/v2/jobs":
            self.listings.append(request.url.params)
            if len(self.listings) >= 3:
                self.polled_thrice.set()
            results = [{"id": JOB, "pipeline_slug": SLUG}] if self.queue else []
            return httpx.Response(200, json={"count": len(results), "results": results})
        if request.method == "POST" and path == f"/api/v2/jobs/{JOB}/tasks/":
            size = json.loads(request.content)["batch_size"]
            batch = [self.queue.popleft() for _ in range(min(size, len(self.queue)))]
            self.batch_sizes.append(len(batch))
            return httpx.Response(200, json={"tasks": [t.model_dump() for t in batch]})
        if request.method == "POST" and re.fullmatch(rf"/api/v2/jobs/{JOB}/result/", path):
            if self.fail_posts:
                self.fail_posts -= 1
                return httpx.Response(503, json={"detail": "try again"})
            entries = json.loads(request.content)["results"]
            self.posted += [PipelineTaskResult.model_validate(e) for e in entries]
            acks = [
                {"reply_subject": e["reply_subject"], "status": "queued", "task_id": "t"}
                for e in entries
            ]
            return httpx.Response(
                200,
                json={
                    "status": "accepted",
                    "job_id": JOB,
                    "results_queued": len(entries),
                    "tasks": acks,
                },
            )
        return httpx.Response(404, json={"detail": f"no route {request.method} {path}"})


def worker(api: StubApi, **overrides: object) -> FakeWorker:
    config = FakeWorkerConfig.model_validate(
        {
            "api_url": "http://api.test",
            "token": TOKEN,
            "concurrency": 3,
            "batch_size": 7,
            "poll_interval": 0.05,
            "max_idle": 0.2,
            "error_rate": 0.2,
            "pipelines": [SLUG],
            **overrides,
        }
    )
    return FakeWorker(config, transport=httpx.MockTransport(api.handle))


async def test_drains_the_job_and_posts_each_image_once():
    api = StubApi(images=100)
    totals = await asyncio.wait_for(worker(api).run(), 30)

    assert sorted(int(r.reply_subject.split(".")[1]) for r in api.posted) == list(range(1, 101))
    assert max(api.batch_sizes) == 7
    params = api.listings[0]
    assert params["ids_only"] == "1" and params["incomplete_only"] == "1"
    assert params["dispatch_mode"] == "async_api" and params["pipeline__slug__in"] == SLUG

    # The totals are what the same images give when built directly (results are deterministic).
    expected = JobCounts()
    for i in range(1, 101):
        expected.add(result_document(api_task(i), SLUG, error_rate=0.2))
    assert totals["images"] == 100
    for key in ("errors", "detections", "classifications"):
        assert totals[key] == expected.summary()[key]
    assert 0 < totals["errors"] < 100
    assert totals["repeats"] == 0 and totals["rejected"] == 0 and totals["jobs"] == 1


def api_task(i: int) -> PipelineProcessingTask:
    return PipelineProcessingTask(
        id=str(i), image_id=str(i), image_url=f"http://img/{i}.jpg", reply_subject=f"r.{i}"
    )


async def test_retries_a_result_post_that_got_a_5xx():
    api = StubApi(images=5, fail_posts=1)
    totals = await asyncio.wait_for(worker(api, concurrency=1, batch_size=5).run(), 30)
    assert len(api.posted) == 5
    assert totals["images"] == 5 and totals["rejected"] == 0


async def test_runs_until_stopped_when_no_idle_limit():
    api = StubApi(images=0)
    fake = worker(api, max_idle=None)
    running = asyncio.create_task(fake.run())
    # It polls again and again while there is no work.
    await asyncio.wait_for(api.polled_thrice.wait(), 10)
    fake.stop()
    totals = await asyncio.wait_for(running, 5)
    assert totals["images"] == 0 and totals["jobs"] == 0
