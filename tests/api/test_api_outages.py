"""503s when NATS or Postgres cannot be reached (the app's connections go through a TCP proxy the
test cuts), and nothing acked for a result that was not stored."""

from __future__ import annotations

from urllib.parse import urlsplit

import nats

from api.context import ApiResources
from core.states import JobState
from storage.pool import open_pool
from tests.helpers import eventually
from tests.helpers.api import http_client, running_app
from tests.helpers.db import create_token, inbox_rows
from tests.helpers.jobs import entry, make_job, success_result
from tests.helpers.processes import TcpProxy


async def test_tasks_503_while_nats_is_unreachable(settings, pool, temporal_client, streams):
    job = await make_job(pool, images=4, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    target = urlsplit(settings.nats.url)
    proxy = TcpProxy(target.hostname, target.port)
    await proxy.start()
    nc = await nats.connect(f"nats://127.0.0.1:{proxy.port}", max_reconnect_attempts=1)
    try:
        async with pool.connection() as conn:
            key = await create_token(conn, "outage test")
        resources = ApiResources(pool=pool, nats=nc, temporal=temporal_client)
        async with running_app(settings, resources) as app, http_client(app, key) as client:
            ok = await client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 1})
            assert ok.status_code == 200 and len(ok.json()["tasks"]) == 1

            await proxy.cut()

            async def disconnected() -> bool:
                return not nc.is_connected

            await eventually(disconnected)
            response = await client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 1})
            assert response.status_code == 503
            assert response.json() == {"error": "Task queue temporarily unavailable"}
    finally:
        await nc.close()


async def test_results_503_while_postgres_is_unreachable(settings, pool, temporal_client, streams):
    job = await make_job(pool, images=2, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    db = urlsplit(settings.database.url)
    proxy = TcpProxy(db.hostname, db.port or 5432)
    await proxy.start()
    proxied = settings.database.model_copy(
        update={
            "url": settings.database.url.replace(
                db.netloc, f"{db.username}@127.0.0.1:{proxy.port}"
            ),
            "pool_min_size": 1,
            "pool_max_size": 2,
        }
    )
    app_pool = await open_pool(proxied)
    nc = await nats.connect(settings.nats.url)
    try:
        async with pool.connection() as conn:
            key = await create_token(conn, "outage test")
        resources = ApiResources(pool=app_pool, nats=nc, temporal=temporal_client)
        async with (
            running_app(settings, resources, db_timeout=1.0) as app,
            http_client(app, key) as client,
        ):
            tasks = (await client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 2})).json()[
                "tasks"
            ]
            assert len(tasks) == 2

            await proxy.cut()

            results = {"results": [entry(t, success_result(t)) for t in tasks]}
            response = await client.post(f"/jobs/{job.id}/result/", json=results)
            assert response.status_code == 503
            assert response.json() == {
                "status": "error",
                "job_id": job.id,
                "detail": "Result store temporarily unavailable",
            }
            response = await client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 1})
            assert response.status_code == 503
            assert "detail" in response.json()

        assert await inbox_rows(pool, job.id) == []
        assert (await streams.consumer(job.id)).num_ack_pending == 2  # nothing acked
    finally:
        await nc.drain()
        await app_pool.close(timeout=1)
