"""The API over real HTTP: uvicorn in-process on a free port, and ``serve()`` as a process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys

import httpx
import nats
import pytest
import uvicorn

from api.app import create_app
from api.context import ApiResources
from tests.helpers_api import (  # noqa: F401 - fixtures
    entry,
    eventually,
    inbox_rows,
    make_job,
    streams_fixture,
    success_result,
)
from tests.helpers_db import create_token


@contextlib.asynccontextmanager
async def uvicorn_server(app):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        return server.started

    try:
        await eventually(started)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_real_http_paths_bodies_and_no_redirects(settings, pool, temporal_client, streams):
    job = await make_job(pool, images=2)
    await streams.publish(job.id, job.images)
    nc = await nats.connect(settings.nats.url)
    try:
        async with pool.connection() as conn:
            key = await create_token(conn, "server test")
        app = create_app(settings, ApiResources(pool=pool, nats=nc, temporal=temporal_client))
        async with (
            uvicorn_server(app) as base,
            httpx.AsyncClient(
                base_url=f"{base}/api/v2",
                headers={"Authorization": f"Token {key}"},
                follow_redirects=False,
                timeout=60,
            ) as client,
        ):
            health = await client.get(f"{base}/healthz")
            assert health.status_code == 200
            listing = await client.get("/jobs", params={"ids_only": 1, "incomplete_only": 1})
            assert listing.status_code == 200
            tasks = (await client.post(f"/jobs/{job.id}/tasks", json={"batch_size": 2})).json()[
                "tasks"
            ]
            assert len(tasks) == 2
            big = success_result(tasks[0], detections=1)
            # ~25 MB: the size class of a global_moths result batch must not hit a body limit.
            big["detections"][0]["classifications"][0]["logits"] = [0.5] * 2_500_000
            response = await client.post(
                f"/jobs/{job.id}/result",
                json={"results": [entry(tasks[0], big), entry(tasks[1], success_result(tasks[1]))]},
            )
            assert response.status_code == 200, response.text
            assert response.json()["results_queued"] == 2
        rows = await inbox_rows(pool, job.id)
        assert len(rows) == 2
        # Validated off the event loop (a big entry) and its arrays copied in as float8[].
        stored = rows[0]["payload"]["detections"][0]["classifications"][0]
        assert stored["logits"] == [0.5] * 2_500_000
        assert stored["scores"] == big["detections"][0]["classifications"][0]["scores"]
    finally:
        await nc.drain()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2])
async def test_serve_runs_the_full_lifespan_and_stops_cleanly(settings, pool, workers):
    port = _free_port()
    env = {
        **os.environ,
        "ANTENNA_JOBS_DATABASE_URL": settings.database.url,
        "ANTENNA_JOBS_DATABASE_SCHEMA": settings.database.schema_name,
        "ANTENNA_JOBS_DATABASE_JOBS_SCHEMA": settings.database.jobs_schema,
        "ANTENNA_JOBS_NATS_URL": settings.nats.url,
        "ANTENNA_JOBS_TEMPORAL_ADDRESS": settings.temporal.address,
    }
    code = (
        "import sys; from api.server import serve; from core.settings import Settings;"
        "serve(Settings(), int(sys.argv[1]), workers=int(sys.argv[2]))"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        str(port),
        str(workers),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with pool.connection() as conn:
            key = await create_token(conn, "serve test")

        async def up() -> bool:
            assert process.returncode is None, "serve() exited early"
            try:
                async with httpx.AsyncClient() as probe:
                    response = await probe.get(f"http://127.0.0.1:{port}/healthz")
            except httpx.TransportError:
                return False
            return response.status_code == 200

        await eventually(up, within=30)
        async with httpx.AsyncClient(headers={"Authorization": f"Token {key}"}) as client:
            # New connections each: with two processes, both end up answering.
            for _ in range(4):
                response = await client.get(
                    f"http://127.0.0.1:{port}/api/v2/projects/", headers={"Connection": "close"}
                )
                assert response.status_code == 200
                assert response.json()["count"] >= 0
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, output.decode()
