"""Helpers and fixtures for the API tests: the app in-process, jobs in given states, task streams.

Test modules import the fixtures they use from here (``api_fixture`` is the fixture ``api``).
Streams created here are deleted at teardown; nothing shared is flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import nats
import pytest_asyncio
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, StreamConfig
from nats.js.errors import NotFoundError

from antenna_db import job_store
from antenna_db.job_store import JobRecord
from antenna_db.seed import CLASSIFIER_KEY, CLASSIFIER_LABELS, DETECTOR_KEY, SeedResult, seed
from api.app import create_app
from api.context import ApiResources
from core import job_runs
from core.job_requests import NewMlJob
from core.naming import Names
from core.settings import Settings
from core.states import DispatchMode, JobState
from tests.helpers_db import create_token
from tests.helpers_temporal import running_workers


@contextlib.asynccontextmanager
async def running_app(
    settings, resources: ApiResources, *, db_timeout: float = 10.0
) -> AsyncIterator[FastAPI]:
    """The app with its lifespan entered (httpx's ASGITransport does not run lifespans)."""
    app = create_app(settings, resources=resources, db_timeout=db_timeout)
    async with app.router.lifespan_context(app):
        yield app


def http_client(app: FastAPI, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Token {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver/api/v2",
        headers=headers,
        timeout=30,
    )


@dataclass
class Api:
    """An authenticated client of an in-process app with its own NATS connection."""

    client: httpx.AsyncClient
    key: str
    app: FastAPI
    nats: NatsClient


@pytest_asyncio.fixture(name="api")
async def api_fixture(settings, pool, temporal_client) -> AsyncIterator[Api]:
    nc = await nats.connect(settings.nats.url, name="antenna-jobs-api-test")
    try:
        resources = ApiResources(pool=pool, nats=nc, temporal=temporal_client)
        async with running_app(settings, resources) as app:
            async with pool.connection() as conn:
                key = await create_token(conn, "api tests")
            async with http_client(app, key) as client:
                yield Api(client=client, key=key, app=app, nats=nc)
    finally:
        await nc.drain()


def made_run_id(job_id: int) -> str:
    """The run id make_job gives a job it moves to STARTED without a workflow."""
    return f"{job_id:012x}" + "0" * 20


def made_consumer(job_id: int) -> str:
    """The consumer of the run make_job gives a job."""
    return Names().consumer(job_id, made_run_id(job_id))


@dataclass
class Streams:
    """Creates job streams like engineer A's publish activity does, and deletes them after."""

    js: JetStreamContext
    settings: Any
    created: list[int] = field(default_factory=list)

    @property
    def names(self) -> Names:
        return self.settings.jobs.names

    async def create(self, job_id: int) -> None:
        await self.js.add_stream(
            StreamConfig(
                name=self.names.stream(job_id),
                subjects=[self.names.subject(job_id)],
                max_age=self.settings.nats.stream_max_age.total_seconds(),
                duplicate_window=60,
                allow_direct=True,
            )
        )
        self.created.append(job_id)
        await self.js.add_consumer(
            self.names.stream(job_id),
            ConsumerConfig(
                durable_name=made_consumer(job_id),
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.settings.nats.ack_wait.total_seconds(),
                max_deliver=self.settings.nats.max_deliver,
                max_ack_pending=self.settings.nats.max_ack_pending,
                filter_subject=self.names.subject(job_id),
            ),
        )

    async def publish(self, job_id: int, images: list[tuple[int, str]]) -> None:
        """One task message per image, published with a bounded window of async publishes."""
        if job_id not in self.created:
            await self.create(job_id)
        futures = []
        for image_id, url in images:
            body = {"id": str(image_id), "image_id": str(image_id), "image_url": url}
            futures.append(
                await self.js.publish_async(
                    self.names.subject(job_id),
                    json.dumps({**body, "reply_subject": None}).encode(),
                    headers={"Nats-Msg-Id": str(image_id)},
                )
            )
        await asyncio.gather(*futures)

    async def consumer(self, job_id: int) -> ConsumerInfo:
        return await self.js.consumer_info(self.names.stream(job_id), made_consumer(job_id))

    async def delete(self, job_id: int) -> None:
        with contextlib.suppress(NotFoundError):
            await self.js.delete_stream(self.names.stream(job_id))


@pytest_asyncio.fixture(name="streams")
async def streams_fixture(settings, nats_client) -> AsyncIterator[Streams]:
    created = Streams(js=nats_client.jetstream(), settings=settings)
    try:
        yield created
    finally:
        for job_id in created.created:
            await created.delete(job_id)


@dataclass
class JobFixture:
    job: JobRecord
    seeded: SeedResult
    images: list[tuple[int, str]]

    @property
    def id(self) -> int:
        return self.job.id


async def make_job(
    pool,
    *,
    images: int = 8,
    status: JobState = JobState.STARTED,
    dispatch_mode: DispatchMode = DispatchMode.ASYNC_API,
    seeded: SeedResult | None = None,
) -> JobFixture:
    """A seeded ML job moved straight to ``status`` (no workflow involved)."""
    async with pool.connection() as conn:
        seeded = seeded or await seed(conn, images)
        new = NewMlJob(
            project_id=seeded.project_id,
            pipeline_slug=seeded.pipeline_slug,
            collection_id=seeded.collection_id,
            dispatch_mode=dispatch_mode,
        )
        job = await job_store.create_ml_job(conn, new)
        if status != JobState.CREATED:
            await conn.execute("UPDATE jobs_job SET status = %s WHERE id = %s", (status, job.id))
            await job_runs.take(
                conn,
                job.id,
                made_run_id(job.id),
                Names().consumer(job.id, made_run_id(job.id)),
            )
        cur = await conn.execute(
            "SELECT s.id, rtrim(s.public_base_url, '/') || '/' || s.path AS url"
            " FROM main_sourceimagecollection_images c JOIN main_sourceimage s"
            " ON s.id = c.sourceimage_id WHERE c.sourceimagecollection_id = %s ORDER BY s.id",
            (seeded.collection_id,),
        )
        rows = [(r["id"], r["url"]) for r in await cur.fetchall()]
        return JobFixture(job=await job_store.get_job(conn, job.id), seeded=seeded, images=rows)


def success_result(task: dict[str, Any], detections: int = 1) -> dict[str, Any]:
    """What the ADC posts for one processed image (bbox always set, full scores and logits)."""
    now = datetime.now(UTC).isoformat()
    image_id = task["image_id"]
    return {
        "pipeline": "fake",
        "algorithms": {},
        "total_time": 0.25,
        "source_images": [{"id": image_id, "url": task["image_url"]}],
        "detections": [
            {
                "source_image_id": image_id,
                "bbox": {"x1": 10.0 * i, "y1": 5.0, "x2": 10.0 * i + 8, "y2": 20.0},
                "inference_time": 0.01,
                "algorithm": {"name": "Fake Detector", "key": DETECTOR_KEY},
                "timestamp": now,
                "crop_image_url": None,
                "classifications": [
                    {
                        "classification": CLASSIFIER_LABELS[0],
                        "labels": CLASSIFIER_LABELS,
                        "scores": [0.6, 0.1, 0.1, 0.1, 0.1],
                        "logits": [2.0, 0.1, 0.1, 0.1, 0.1],
                        "inference_time": 0.02,
                        "algorithm": {"name": "Fake Classifier", "key": CLASSIFIER_KEY},
                        "terminal": True,
                        "timestamp": now,
                    }
                ],
            }
            for i in range(detections)
        ],
        "config": {"ignored": True},
    }


def error_result(task: dict[str, Any] | None, message: str = "download failed") -> dict[str, Any]:
    return {"error": message, "image_id": task["image_id"] if task else None}


def entry(task: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    return {"reply_subject": task["reply_subject"], "result": result}


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 10.0, interval: float = 0.05
) -> None:
    """Poll ``check`` until it returns True; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


async def inbox_rows(pool, job_id: int) -> list[dict[str, Any]]:
    """The job's stored results, each payload with its classifications' arrays put back from
    result_arrays (where the API stores them apart from the JSON)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, image_id, reply_subject, is_error, payload FROM result_inbox"
            " WHERE job_id = %s ORDER BY id",
            (job_id,),
        )
        rows = list(await cur.fetchall())
        cur = await conn.execute(
            "SELECT inbox_id, det, cls, scores, logits FROM result_arrays WHERE inbox_id = ANY(%s)",
            ([r["id"] for r in rows],),
        )
        arrays = await cur.fetchall()
    by_id = {r["id"]: r for r in rows}
    for a in arrays:
        c = by_id[a["inbox_id"]]["payload"]["detections"][a["det"]]["classifications"][a["cls"]]
        del c["n_scores"]
        c["scores"] = a["scores"]
        c["logits"] = a["logits"]
    return rows


async def job_status(pool, job_id: int) -> JobState:
    async with pool.connection() as conn:
        return await job_store.get_status(conn, job_id)


class TcpProxy:
    """A TCP forwarder the test can cut, to make a real server unreachable for one client."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if self._server is not None:
            await self._server.wait_closed()


# --- whole jobs over the API, with the job workers in-process ---


@contextlib.asynccontextmanager
async def api_and_workers(
    settings: Settings, pool: Any, temporal_client: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The job workers and the API in-process; a superuser's client of the API."""
    async with pool.connection() as conn:
        key = await create_token(conn, "pause tests")
    nc = await nats.connect(settings.nats.url)
    try:
        resources = ApiResources(pool=pool, nats=nc, temporal=temporal_client)
        async with (
            running_workers(temporal_client, settings),
            running_app(settings, resources) as app,
            http_client(app, key) as client,
        ):
            yield client
    finally:
        await nc.drain()


async def start_over_api(client: httpx.AsyncClient, seeded: SeedResult) -> int:
    created = await client.post(
        "/jobs/?start_now=1",
        json={
            "project_id": seeded.project_id,
            "pipeline_slug": seeded.pipeline_slug,
            "collection_id": seeded.collection_id,
        },
    )
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


async def take_tasks(client: httpx.AsyncClient, job_id: int, count: int) -> list[dict[str, Any]]:
    """Exactly ``count`` tasks (publishing may still be under way: ask until they are out)."""
    got: list[dict[str, Any]] = []

    async def enough() -> bool:
        answer = await client.post(f"/jobs/{job_id}/tasks/", json={"batch_size": count - len(got)})
        assert answer.status_code == 200, answer.text
        got.extend(answer.json()["tasks"])
        return len(got) >= count

    await eventually(enough, within=60)
    assert len(got) == count
    return got


async def tasks_now(client: httpx.AsyncClient, job_id: int) -> list[dict[str, Any]]:
    answer = await client.post(f"/jobs/{job_id}/tasks/", json={"batch_size": 50})
    assert answer.status_code == 200, answer.text
    tasks: list[dict[str, Any]] = answer.json()["tasks"]
    return tasks


async def answer_tasks(client: httpx.AsyncClient, job_id: int, tasks: list[dict[str, Any]]) -> None:
    body = {"results": [entry(t, success_result(t, detections=1)) for t in tasks]}
    answer = await client.post(f"/jobs/{job_id}/result/", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results_queued"] == len(tasks)


async def run_counters(pool: Any, job_id: int) -> tuple[int, int]:
    async with pool.connection() as conn:
        run = await job_runs.get(conn, job_id)
    return (run.counters.processed, run.counters.failed) if run else (0, 0)
