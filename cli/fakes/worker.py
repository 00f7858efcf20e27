"""A stand-in for the Antenna ADC worker (docs/antenna-jobs.md section 6), over real HTTP.

Loop: ``GET {base}/jobs`` (ids_only, incomplete_only, dispatch_mode=async_api, optional
pipeline__slug__in); for each job listed, ``concurrency`` fetchers each loop ``POST
/jobs/{id}/tasks/`` ``{"batch_size": 24}`` until an empty list, build one synthetic result per
image (cli.fakes.results), wait ``delay`` s (the "inference"), and ``POST /jobs/{id}/result/``
``{"results": [...]}``. Like the ADC worker, an empty task list or a failed fetch ends a fetcher's
loop, and the worker sleeps ``poll_interval`` when no job gave it work. Unlike it, a result POST
that fails on the network or with a 5xx is retried (``post_retries``): the server stores results
idempotently, and waiting for a redelivery (ack_wait) would only slow the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import BaseModel, Field

from cli.fakes.results import DEMO_MODEL, FakeModel, JobCounts, result_document
from core import backoff, json_codec
from core.schemas import (
    AlgorithmReference,
    PipelineProcessingTask,
    ResultsResponse,
    TasksResponse,
)

log = logging.getLogger("antenna_jobs.fake_worker")


class FakeWorkerConfig(BaseModel):
    api_url: str
    token: str
    delay: float = Field(default=0.0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    # Share of the images answered "nothing found" (no detections: a null marker is saved).
    empty_rate: float = Field(default=0.0, ge=0, le=1)
    concurrency: int = Field(default=4, ge=1)
    batch_size: int = Field(default=24, ge=1)
    pipelines: list[str] = Field(default_factory=list)
    poll_interval: float = Field(default=5.0, gt=0)
    # Stop after this long without work (None: run until stopped); 0 means one pass.
    max_idle: float | None = None
    seed: int = 0
    post_retries: int = Field(default=3, ge=0)
    timeout: float = 60.0
    # The algorithm keys and labels results name (default: the demo pipeline's).
    detector_key: str = DEMO_MODEL.detector.key
    classifier_key: str = DEMO_MODEL.classifier.key
    labels: list[str] = Field(default_factory=lambda: list(DEMO_MODEL.labels), min_length=1)

    def model(self) -> FakeModel:
        return FakeModel(
            detector=AlgorithmReference(name=self.detector_key, key=self.detector_key),
            classifier=AlgorithmReference(name=self.classifier_key, key=self.classifier_key),
            labels=tuple(self.labels),
        )


def api_base(url: str) -> str:
    """The ADC worker's base URL (``.../api/v2``), from a server URL with or without it."""
    url = url.rstrip("/")
    return url if url.endswith("/api/v2") else f"{url}/api/v2"


class FakeWorker:
    def __init__(
        self, config: FakeWorkerConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self._model = config.model()
        self._transport = transport  # tests may serve the API in-process
        self.jobs: dict[int, JobCounts] = {}
        self.stopping = asyncio.Event()

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(JobCounts().summary(), 0)
        for counts in self.jobs.values():
            for key, value in counts.summary().items():
                out[key] = out.get(key, 0) + value
        out["jobs"] = len(self.jobs)
        return out

    def stop(self) -> None:
        self.stopping.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeWorker]:
        """This worker polling in the background until the block ends (then stopped)."""
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            self.stop()
            await task

    async def run(self) -> dict[str, int]:
        """Poll and work until ``stop()`` or ``max_idle`` s without work; returns the totals."""
        headers = {"Authorization": f"Token {self.config.token}"}
        async with httpx.AsyncClient(
            base_url=api_base(self.config.api_url),
            headers=headers,
            timeout=self.config.timeout,
            follow_redirects=True,
            limits=httpx.Limits(max_connections=self.config.concurrency + 2),
            transport=self._transport,
        ) as http:
            idle_since = time.monotonic()
            while not self.stopping.is_set():
                worked = False
                for job_id, slug in await self._list_jobs(http):
                    worked |= await self._process_job(http, job_id, slug)
                now = time.monotonic()
                if worked:
                    idle_since = now
                    continue
                max_idle = self.config.max_idle
                if max_idle is not None and now - idle_since >= max_idle:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self.config.poll_interval)
        return self.totals()

    async def _list_jobs(self, http: httpx.AsyncClient) -> list[tuple[int, str]]:
        params: dict[str, Any] = {
            "ids_only": 1,
            "incomplete_only": 1,
            "dispatch_mode": "async_api",
        }
        if self.config.pipelines:
            params["pipeline__slug__in"] = ",".join(self.config.pipelines)
        try:
            response = await http.get("/jobs", params=params)
            response.raise_for_status()
            return [(int(j["id"]), str(j["pipeline_slug"])) for j in response.json()["results"]]
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as err:
            # The ADC worker treats any listing error as "no jobs" and polls again later.
            log.warning("listing jobs failed: %r", err)
            return []

    async def _process_job(self, http: httpx.AsyncClient, job_id: int, slug: str) -> bool:
        counts = self.jobs.setdefault(job_id, JobCounts())
        fetchers = [
            self._fetch_loop(http, job_id, slug, counts) for _ in range(self.config.concurrency)
        ]
        return any(await asyncio.gather(*fetchers))

    async def _fetch_loop(
        self, http: httpx.AsyncClient, job_id: int, slug: str, counts: JobCounts
    ) -> bool:
        worked = False
        while not self.stopping.is_set():
            tasks = await self._fetch(http, job_id)
            if not tasks:
                return worked
            worked = True
            started = time.monotonic()
            if self.config.delay:
                await asyncio.sleep(self.config.delay)  # the simulated inference
            per_image = (time.monotonic() - started) / len(tasks)
            results = [
                result_document(
                    task,
                    slug,
                    error_rate=self.config.error_rate,
                    seed=self.config.seed,
                    total_time=per_image,
                    model=self._model,
                    empty_rate=self.config.empty_rate,
                )
                for task in tasks
            ]
            counts.batches += 1
            if await self._post(http, job_id, results):
                for result in results:
                    counts.add(result)
            else:
                counts.rejected += len(results)
        return worked

    async def _fetch(self, http: httpx.AsyncClient, job_id: int) -> list[PipelineProcessingTask]:
        try:
            response = await http.post(
                f"/jobs/{job_id}/tasks/", json={"batch_size": self.config.batch_size}
            )
            response.raise_for_status()
            return TasksResponse.model_validate_json(response.content).tasks
        except (httpx.HTTPError, ValueError) as err:
            log.warning("job %s: fetching tasks failed: %r", job_id, err)
            return []

    async def _post(
        self, http: httpx.AsyncClient, job_id: int, results: list[dict[str, Any]]
    ) -> bool:
        body = json_codec.dumps({"results": results})
        for attempt in range(self.config.post_retries + 1):
            try:
                response = await http.post(
                    f"/jobs/{job_id}/result/",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
            except httpx.TransportError as err:
                log.warning("job %s: posting results failed (attempt %d): %r", job_id, attempt, err)
            else:
                if response.status_code < 500:
                    break
                log.warning("job %s: result POST got %s", job_id, response.status_code)
            await asyncio.sleep(backoff.delay(attempt + 1, 0.5, 5.0))  # before the retry
        else:
            return False
        if response.is_error:
            log.error(
                "job %s: results rejected %s: %s", job_id, response.status_code, response.text[:500]
            )
            return False
        ResultsResponse.model_validate_json(response.content)
        return True
