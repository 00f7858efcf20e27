"""A fake push-mode (sync) processing service: ``GET /info``, ``/livez``, ``/readyz`` and
``POST /process`` (PipelineRequest -> PipelineResultsResponse), like Antenna's processing
services, with synthetic results from cli.fakes.results (same image, same result).

Knobs: ``latency`` per request, ``error_rate`` (a share of requests answered 500), and, for tests,
image ids whose batches always fail (500), get an invalid body, or hang. A request whose client
goes away (a cancelled job) stops at once and is counted in ``stats.disconnected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from antenna_db.seed import CLASSIFIER_LABELS
from cli.fakes.results import CLASSIFIER, DETECTOR, build_result
from core.schemas import (
    AlgorithmCategoryMapResponse,
    AlgorithmConfigResponse,
    DetectionResponse,
    PipelineConfigResponse,
    PipelineProcessingTask,
    PipelineRequest,
    PipelineResultsResponse,
    ProcessingServiceInfoResponse,
    SourceImageResponse,
)

# How often a slow request looks whether its client is still there.
_DISCONNECT_POLL = 0.05
HANG_SECONDS = 3600.0


class FakeServiceConfig(BaseModel):
    name: str = "Fake push-mode processing service"
    # Slugs listed by /info; /process answers for whatever pipeline it is asked for.
    pipelines: list[str] = Field(default_factory=lambda: ["fake-pipeline"])
    latency: float = Field(default=0.0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    seed: int = 0
    ready: bool = True
    fail_images: set[str] = Field(default_factory=set)
    invalid_images: set[str] = Field(default_factory=set)
    hang_images: set[str] = Field(default_factory=set)


@dataclass
class FakeServiceStats:
    requests: int = 0
    answered: int = 0
    errors: int = 0
    disconnected: int = 0
    in_flight: int = 0
    images: int = 0
    # Requests per batch (the batch's image ids, comma-joined), to count retries.
    batches: dict[str, int] = field(default_factory=dict)


def pipeline_config(slug: str) -> PipelineConfigResponse:
    return PipelineConfigResponse(
        name=f"Fake pipeline {slug}",
        slug=slug,
        description="Synthetic detector and classifier",
        algorithms=_algorithms(),
    )


def _algorithms() -> list[AlgorithmConfigResponse]:
    return [
        AlgorithmConfigResponse(name=DETECTOR.name, key=DETECTOR.key, task_type="localization"),
        AlgorithmConfigResponse(
            name=CLASSIFIER.name,
            key=CLASSIFIER.key,
            task_type="classification",
            category_map=AlgorithmCategoryMapResponse(labels=list(CLASSIFIER_LABELS)),
        ),
    ]


def results_for(request: PipelineRequest, seed: int, total_time: float) -> PipelineResultsResponse:
    """The synthetic results of a batch: the fake worker's per-image results, merged."""
    detections: list[DetectionResponse] = []
    for image in request.source_images:
        task = PipelineProcessingTask(id=image.id, image_id=image.id, image_url=image.url)
        result = build_result(task, request.pipeline, seed=seed).result
        assert isinstance(result, PipelineResultsResponse)  # error_rate 0: never an error
        detections += result.detections
    return PipelineResultsResponse(
        pipeline=request.pipeline,
        total_time=total_time,
        source_images=[SourceImageResponse(id=i.id, url=i.url) for i in request.source_images],
        detections=detections,
    )


def create_fake_service(
    config: FakeServiceConfig, stats: FakeServiceStats | None = None
) -> FastAPI:
    stats = stats if stats is not None else FakeServiceStats()
    rng = random.Random(config.seed)
    app = FastAPI(title=config.name)
    app.state.stats = stats

    @app.get("/info")
    async def info() -> dict[str, Any]:
        body = ProcessingServiceInfoResponse(
            name=config.name,
            description="antenna-jobs fake-service",
            pipelines=[pipeline_config(slug) for slug in config.pipelines],
            algorithms=_algorithms(),
        )
        return body.model_dump(mode="json")

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not config.ready:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ok", "pipelines": config.pipelines})

    @app.post("/process")
    async def process(body: PipelineRequest, request: Request) -> JSONResponse:
        ids = {image.id for image in body.source_images}
        key = ",".join(image.id for image in body.source_images)
        stats.requests += 1
        stats.batches[key] = stats.batches.get(key, 0) + 1
        stats.in_flight += 1
        started = time.monotonic()
        try:
            wait = HANG_SECONDS if ids & config.hang_images else config.latency
            if not await _sleep_unless_gone(request, wait):
                stats.disconnected += 1
                return JSONResponse({"detail": "client went away"}, status_code=499)
            if ids & config.fail_images or rng.random() < config.error_rate:
                stats.errors += 1
                return JSONResponse({"detail": "fake service: simulated failure"}, status_code=500)
            if ids & config.invalid_images:
                return JSONResponse({"pipeline": body.pipeline, "detections": "not a list"})
            results = results_for(body, config.seed, time.monotonic() - started)
            stats.answered += 1
            stats.images += len(body.source_images)
            return JSONResponse(results.model_dump(mode="json"))
        finally:
            stats.in_flight -= 1

    return app


async def _sleep_unless_gone(request: Request, seconds: float) -> bool:
    """Sleep ``seconds``; False as soon as the client disconnects."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, _DISCONNECT_POLL))
        if await request.is_disconnected():
            return False
    return True


@contextlib.asynccontextmanager
async def serving(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn in this event loop; yields its base URL (port 0: a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()
