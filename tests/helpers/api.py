"""The API in-process for tests: the app with its lifespan, an authenticated client of it
(fixture ``api``), job task streams as the publish activity makes them (fixture ``streams``).

Streams created here are deleted at teardown; nothing shared is flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import pytest_asyncio
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, StreamConfig
from nats.js.errors import NotFoundError

from api.app import create_app
from api.context import ApiResources
from core.naming import Names
from core.settings import Settings
from tests.helpers import eventually
from tests.helpers.db import create_token
from tests.helpers.jobs import entry, made_consumer, success_result
from tests.helpers.temporal import running_workers


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


@contextlib.asynccontextmanager
async def app_with_workers(
    settings: Any, pool: Any, temporal_client: Any, key: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The job workers and the app in-process (with a NATS connection of its own), and a client
    of the app authenticated with ``key``: a whole async job's path without subprocesses."""
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


@dataclass
class Api:
    """An authenticated client of an in-process app with its own NATS connection."""

    client: httpx.AsyncClient
    key: str
    app: FastAPI
    nats: NatsClient


@contextlib.asynccontextmanager
async def serving_api(
    settings: Settings, pool: Any, temporal_client: Any, nc: NatsClient, token_name: str
) -> AsyncIterator[Api]:
    """The API app of ``settings`` in-process and a client with a new superuser's token."""
    resources = ApiResources(pool=pool, nats=nc, temporal=temporal_client)
    async with running_app(settings, resources) as app:
        async with pool.connection() as conn:
            key = await create_token(conn, token_name)
        async with http_client(app, key) as client:
            yield Api(client=client, key=key, app=app, nats=nc)


@pytest_asyncio.fixture(name="api")
async def api_fixture(settings, pool, temporal_client) -> AsyncIterator[Api]:
    nc = await nats.connect(settings.nats.url, name="antenna-jobs-api-test")
    try:
        async with serving_api(settings, pool, temporal_client, nc, "api tests") as api:
            yield api
    finally:
        await nc.drain()


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


# --- whole jobs over the API, with the job workers in-process ---


@contextlib.asynccontextmanager
async def api_and_workers(
    settings: Any, pool: Any, temporal_client: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """``app_with_workers`` with a new superuser's token."""
    async with pool.connection() as conn:
        key = await create_token(conn, "api and workers")
    async with app_with_workers(settings, pool, temporal_client, key) as client:
        yield client


async def start_over_api(client: httpx.AsyncClient, seeded: Any) -> int:
    """Create and start an ML job of ``seeded``'s pipeline and collection; its id."""
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
    """What one ``/tasks/`` call hands out now."""
    answer = await client.post(f"/jobs/{job_id}/tasks/", json={"batch_size": 50})
    assert answer.status_code == 200, answer.text
    tasks: list[dict[str, Any]] = answer.json()["tasks"]
    return tasks


async def answer_tasks(client: httpx.AsyncClient, job_id: int, tasks: list[dict[str, Any]]) -> None:
    """Post one success result for each of ``tasks``; all must be queued."""
    body = {"results": [entry(t, success_result(t, detections=1)) for t in tasks]}
    answer = await client.post(f"/jobs/{job_id}/result/", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results_queued"] == len(tasks)
