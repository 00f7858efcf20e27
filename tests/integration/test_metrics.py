"""Prometheus ``/metrics`` of the API and of the worker, scraped while a job runs: the figures are
the database's and NATS's (and the Temporal SDK's metrics come along on the worker's)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime, TelemetryConfig

from antenna_db import users
from antenna_db.users import Role
from api.context import ApiResources
from cli.stack import processes
from core.metrics import RESULTS_RECEIVED, RESULTS_SAVED
from core.states import JobState
from core.temporal_client import sdk_metrics_options
from job_control.actions import JobActions
from tests.helpers import eventually
from tests.helpers.api import http_client, running_app
from tests.helpers.jobs import entry, make_job, success_result
from tests.helpers.processes import Proc, child_env, wait_port
from tests.helpers.temporal import (
    SimulatedAdcWorker,
    job_handle,
    running_workers,
    simulated_worker,
)
from worker.main import start_metrics


def scrape_text(fetch: Callable[[], bytes]) -> dict[str, float]:
    """Sample name{labels} -> value of an exposition."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(fetch().decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


async def one(pool, sql: str, *args: Any) -> Any:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, args)
        row = await cur.fetchone()
        return None if row is None else next(iter(row.values()))


async def by_status(pool) -> dict[str, int]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT status, count(*)::int AS n FROM jobs_job GROUP BY status")
        return {r["status"]: r["n"] for r in await cur.fetchall()}


def job_series(name: str, job, slug: str, **extra: str) -> str:
    labels = {"job_id": str(job.id), "project_id": str(job.project_id), "pipeline": slug, **extra}
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


async def test_api_metrics_match_the_database_and_nats(api, pool, streams):
    made = await make_job(pool, images=8, status=JobState.STARTED)
    job, slug = made.job, made.seeded.pipeline_slug
    await streams.publish(job.id, made.images)
    received_before = RESULTS_RECEIVED._value.get()

    fetched = await api.client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 3})
    tasks = fetched.json()["tasks"]
    assert len(tasks) == 3
    posted = await api.client.post(
        f"/jobs/{job.id}/result/",
        json={"results": [entry(t, success_result(t)) for t in tasks[:2]]},
    )
    assert posted.status_code == 200, posted.text

    async def acked() -> bool:  # JetStream applies an ack shortly after it arrives
        return (await streams.consumer(job.id)).num_ack_pending == 1

    await eventually(acked, within=10)
    scraped = await api.client.get("http://testserver/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    m = scrape_text(lambda: scraped.content)

    statuses = await by_status(pool)
    for status, n in statuses.items():
        assert m[f'antenna_jobs_jobs{{status="{status}"}}'] == n
    consumer = await streams.consumer(job.id)
    assert (consumer.num_pending, consumer.num_ack_pending) == (5, 1)
    assert m[job_series("antenna_jobs_job_tasks_queued", job, slug)] == consumer.num_pending
    assert m[job_series("antenna_jobs_job_tasks_in_flight", job, slug)] == consumer.num_ack_pending
    assert m[job_series("antenna_jobs_job_tasks_redelivered", job, slug)] == (
        consumer.num_redelivered
    )
    inbox = await one(pool, "SELECT count(*) FROM result_inbox WHERE job_id = %s", job.id)
    assert inbox == 2
    assert m[job_series("antenna_jobs_job_inbox_rows", job, slug)] == inbox
    assert m["antenna_jobs_result_inbox_rows"] == await one(
        pool, "SELECT count(*) FROM result_inbox"
    )
    oldest_now = await one(
        pool, "SELECT extract(epoch FROM now() - min(received_at))::float8 FROM result_inbox"
    )
    assert 0 < m["antenna_jobs_result_inbox_oldest_age_seconds"] <= oldest_now
    polled = await one(
        pool, "SELECT polled_at FROM pipeline_polls WHERE pipeline_id = %s", job.pipeline_id
    )
    last_poll = m[f'antenna_jobs_pipeline_last_poll_timestamp_seconds{{pipeline="{slug}"}}']
    assert last_poll == pytest.approx(polled.timestamp(), abs=1e-3)
    run = await one(pool, "SELECT total FROM job_runs WHERE job_id = %s", job.id)
    assert m[job_series("antenna_jobs_job_images", job, slug, state="total")] == run
    assert RESULTS_RECEIVED._value.get() - received_before == 2
    assert m["antenna_jobs_results_received_total"] == RESULTS_RECEIVED._value.get()
    # The request histogram: /tasks/ and /result/ by route template and status.
    for path in ("tasks", "result"):
        route = f"/api/v2/jobs/{{job_id}}/{path}/"
        count = (
            f'antenna_jobs_api_request_seconds_count{{method="POST",route="{route}",status="200"}}'
        )
        assert m[count] >= 1
    assert m[job_series("antenna_jobs_job_waiting_for_workers", job, slug)] == 0


async def client_with_sdk_metrics(temporal_env: Any) -> tuple[Client, str]:
    """A client of the test's Temporal server whose runtime serves the SDK's metrics on a free
    port; the client and that port's address."""
    bind = f"127.0.0.1:{processes.free_port()}"
    runtime = Runtime(telemetry=TelemetryConfig(**sdk_metrics_options(bind)))
    client = await Client.connect(
        temporal_env.client.service_client.config.target_host,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )
    return client, bind


def saved(outcome: str) -> float:
    return RESULTS_SAVED.labels(outcome)._value.get()


async def test_worker_metrics_during_a_job(pool, settings, temporal_env, nats_client):
    """The worker's server: its counters, the overview, and the Temporal SDK's metrics."""
    client, temporal_bind = await client_with_sdk_metrics(temporal_env)
    worker_settings = settings.model_copy(
        update={
            "worker": settings.worker.model_copy(
                update={"metrics_port": 0, "metrics_bind": temporal_bind}
            )
        }
    )
    job, seeded, _ = await make_job(pool, images=20)
    outcomes = ("processed", "failed")
    saved_before = [saved(o) for o in outcomes]
    async with running_workers(client, worker_settings) as resources:
        server = start_metrics(worker_settings, resources)
        assert server is not None
        try:
            worker = SimulatedAdcWorker(
                nats_client,
                pool,
                job.id,
                seeded.pipeline_slug,
                batch_size=5,
                fails=lambda image: image % 5 == 1,
                # Never answered: these stay in flight while the test scrapes.
                ignores=lambda image: image % 5 == 0,
            )
            async with simulated_worker(worker):
                await JobActions(pool, client, worker_settings).run(job.id)

                async def settled() -> bool:
                    counted = await one(
                        pool, "SELECT processed + failed FROM job_runs WHERE job_id = %s", job.id
                    )
                    counted_here = sum(
                        saved(o) - b for o, b in zip(outcomes, saved_before, strict=True)
                    )
                    return counted == counted_here == 16 and len(worker.seen) == 20

                await eventually(settled, within=60)
                async with httpx.AsyncClient() as http:
                    response = await http.get(f"http://127.0.0.1:{server.port}/metrics")
                m = scrape_text(lambda: response.content)
                row = await running_row(pool, job.id)
                consumer = await resources.js.consumer_info(
                    worker_settings.jobs.names.stream(job.id), row["consumer"]
                )
                await JobActions(pool, client, worker_settings).cancel(job.id)
                await asyncio.gather(job_handle(client, job.id).result(), return_exceptions=True)
        finally:
            await asyncio.to_thread(server.stop)

    slug = seeded.pipeline_slug
    assert (
        m[job_series("antenna_jobs_job_images", job, slug, state="processed")] == row["processed"]
    )
    assert m[job_series("antenna_jobs_job_images", job, slug, state="failed")] == row["failed"]
    assert m[job_series("antenna_jobs_job_images", job, slug, state="total")] == row["total"] == 20
    assert (
        m[job_series("antenna_jobs_job_tasks_in_flight", job, slug)]
        == (consumer.num_ack_pending)
        == 4
    )
    assert m[job_series("antenna_jobs_job_tasks_queued", job, slug)] == consumer.num_pending == 0
    assert m['antenna_jobs_jobs{status="STARTED"}'] >= 1
    # This process's savers: exactly the job's outcomes (nothing else ran meanwhile).
    processed = saved("processed") - saved_before[0]
    failed = saved("failed") - saved_before[1]
    assert (processed, failed) == (row["processed"], row["failed"]) == (12, 4)
    assert m['antenna_jobs_results_saved_total{outcome="processed"}'] == saved("processed")
    # The Temporal SDK's own metrics, through the same endpoint, named as core/temporal_client.py
    # says (counters end in _total, durations in seconds end in _seconds, service tag).
    assert any(name.startswith("temporal_") for name in m)
    assert any(
        name.startswith("temporal_workflow_task_schedule_to_start_latency_seconds_bucket{")
        and 'service="antenna-jobs"' in name
        for name in m
    )
    assert any(name.startswith("temporal_request_total{") for name in m)
    assert any(name.startswith("temporal_worker_task_slots_available{") for name in m)


async def running_row(pool, job_id: int) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT total, processed, failed, consumer FROM job_runs WHERE job_id = %s", (job_id,)
        )
        row = await cur.fetchone()
        assert row is not None
        return dict(row)


async def test_api_metrics_carry_the_temporal_sdks(pool, settings, temporal_env, nats_client):
    client, bind = await client_with_sdk_metrics(temporal_env)
    secret = f"scrape-{uuid.uuid4().hex}"
    api_settings = settings.model_copy(
        update={
            "api": settings.api.model_copy(
                update={"temporal_metrics_bind": bind, "metrics_token": secret}
            )
        }
    )
    await client.count_workflows()  # one request, so the SDK has something to report
    resources = ApiResources(pool=pool, nats=nats_client, temporal=client)
    async with running_app(api_settings, resources) as app, http_client(app, secret) as http:
        scraped = await http.get("http://testserver/metrics")
    assert scraped.status_code == 200, scraped.text
    m = scrape_text(lambda: scraped.content)
    assert any(name.startswith("temporal_request") for name in m)
    assert "antenna_jobs_result_inbox_rows" in m


async def test_metrics_and_docs_are_not_public(settings, pool, tmp_path: Path):
    """Issue 17 row 5, on a real ``antenna-jobs api`` process: ``/metrics`` (every running job
    with its project and pipeline) answers the scrape secret and superusers' tokens only;
    ``/docs``, ``/redoc`` and ``/openapi.json`` are off unless ANTENNA_JOBS_API_DOCS is set."""
    secret = f"scrape-{uuid.uuid4().hex}"
    made = await make_job(pool, images=1, status=JobState.STARTED)
    async with pool.connection() as conn:
        superuser = await users.create_token_user(conn, "admin", superuser=True)
        member = await users.create_token_user(
            conn, "member", project_id=made.seeded.project_id, role=Role.ML_DATA_MANAGER
        )
    for docs in (False, True):
        port = processes.free_port()
        env = child_env(
            settings, ANTENNA_JOBS_API_METRICS_TOKEN=secret, ANTENNA_JOBS_API_DOCS=str(docs)
        )
        if not docs:
            env.pop("ANTENNA_JOBS_API_DOCS")  # the default
        api = Proc(
            f"api-{docs}",
            [sys.executable, "-m", "cli", "api", "--port", str(port)],
            tmp_path / f"api-{docs}.log",
            env,
        ).start()
        try:
            await wait_port(port, proc=api)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

                async def scrape(key: str | None) -> int:
                    headers = {"Authorization": f"Token {key}"} if key else {}
                    return (await http.get("/metrics", headers=headers)).status_code

                assert await scrape(None) == 401
                assert await scrape("not-a-token") == 401
                assert await scrape(member) == 403
                assert await scrape(superuser) == 200
                assert await scrape(secret) == 200
                # The scrape secret opens nothing else.
                listed = await http.get(
                    "/api/v2/jobs", headers={"Authorization": f"Token {secret}"}
                )
                assert listed.status_code == 401
                for path in ("/docs", "/redoc", "/openapi.json"):
                    assert (await http.get(path)).status_code == (200 if docs else 404), path
        finally:
            api.stop()
        assert "Traceback" not in api.log.read_text(), api.tail(60)
