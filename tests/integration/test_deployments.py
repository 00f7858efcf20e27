"""Two deployments on one Temporal namespace (issue 17 rows 7 and 8).

Deployment A is the test's own (the session's schemas, no name prefix: the names antenna-jobs
always used); deployment B has schemas, a task queue and a name prefix of its own, and the same
job ids. Each runs ``antenna-jobs worker`` processes and an API in-process, reached over HTTP by
the fake ADC worker; they share Temporal, NATS and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest_asyncio
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus

from antenna_db.schema import ANTENNA
from api.context import ApiResources
from cli.fakes.worker import FakeWorker, FakeWorkerConfig
from core.settings import DatabaseSettings, Settings
from core.states import JobState
from job_control.actions import JobActions
from storage.migrate import migrate
from storage.pool import open_pool
from tests.helpers import eventually
from tests.helpers.api import http_client, running_app
from tests.helpers.db import create_token, fetch_one, job_logs, job_status
from tests.helpers.jobs import make_job
from tests.helpers.processes import VENV_BIN, child_env, worker_processes
from tests.helpers.settings import with_settings
from tests.helpers.temporal import job_handle


@dataclass
class Deployment:
    settings: Settings
    pool: Any
    actions: JobActions


@pytest_asyncio.fixture
async def deployment_b(settings: Settings, temporal_client: Client) -> AsyncIterator[Deployment]:
    """A second deployment: schemas of its own (migrated here), its task queue and prefix."""
    tag = uuid.uuid4().hex[:8]
    db = DatabaseSettings(schema_name=f"aj_test_b{tag}", jobs_schema=f"aj_test_b{tag}_jobs")
    b = with_settings(
        settings,
        database=db,
        jobs={"task_queue": f"aj-test-b{tag}", "name_prefix": f"b{tag}_"},
    )
    await migrate(db, ANTENNA)
    pool = await open_pool(db)
    try:
        yield Deployment(b, pool, JobActions(pool, temporal_client, b))
    finally:
        await pool.close()
        async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
            for schema in (db.jobs_schema, db.schema_name):
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@contextlib.asynccontextmanager
async def fake_adc(d: Deployment, client: Client, pipeline: str) -> AsyncIterator[FakeWorker]:
    """The deployment's API in-process and a fake ADC worker polling it over HTTP."""
    nc = await nats.connect(d.settings.nats.url)
    async with d.pool.connection() as conn:
        token = await create_token(conn, f"adc {pipeline}")
    resources = ApiResources(pool=d.pool, nats=nc, temporal=client)
    try:
        async with running_app(d.settings, resources) as app:
            fake = FakeWorker(
                FakeWorkerConfig(
                    api_url="http://testserver",
                    token=token,
                    pipelines=[pipeline],
                    poll_interval=0.2,
                    concurrency=1,
                ),
                transport=http_client(app, token)._transport,
            )
            async with fake.running():
                yield fake
    finally:
        await nc.drain()


async def status_is(pool: Any, job_id: int, *wanted: JobState, within: float = 60) -> None:
    async def reached() -> bool:
        return await job_status(pool, job_id) in wanted

    await eventually(reached, within=within, interval=0.2)


async def images_of(pool: Any, job_id: int) -> int:
    row = await fetch_one(pool, "SELECT count(*) AS n FROM job_images WHERE job_id = %s", job_id)
    return int(row["n"]) if row else 0


async def test_two_deployments_with_the_same_job_id_each_run_and_cancel_their_own(
    settings: Settings, pool: Any, deployment_b: Deployment, temporal_client: Client, tmp_path
):
    a = Deployment(settings, pool, JobActions(pool, temporal_client, settings))
    b = deployment_b
    job_a = await make_job(a.pool, images=6)
    job_id = job_a.id
    # B's database hands out the same job id.
    async with b.pool.connection() as conn:
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('jobs_job', 'id'), %s)", (job_id - 1,)
        )
    job_b = await make_job(b.pool, images=4)
    assert job_b.id == job_id

    with (
        worker_processes(a.settings, tmp_path / "a") as workers_a,
        worker_processes(b.settings, tmp_path / "b") as workers_b,
    ):
        workers_a.start()
        workers_b.start()
        await a.actions.run(job_id)
        await status_is(a.pool, job_id, JobState.STARTED)
        # Before the fix B's start joined A's running job-N and B's job sat PENDING.
        await b.actions.run(job_id)
        await status_is(b.pool, job_id, JobState.STARTED)
        assert await eventually(lambda: images_of(b.pool, job_id)) == 4
        assert await eventually(lambda: images_of(a.pool, job_id)) == 6

        handle_a = job_handle(temporal_client, job_id, a.settings.jobs.names)
        handle_b = job_handle(temporal_client, job_id, b.settings.jobs.names)
        assert handle_a.id == f"job-{job_id}"  # no prefix: the names of before
        assert handle_b.id == f"{b.settings.jobs.name_prefix}job-{job_id}"
        desc_a, desc_b = await handle_a.describe(), await handle_b.describe()
        assert desc_a.task_queue == a.settings.jobs.task_queue
        assert desc_b.task_queue == b.settings.jobs.task_queue
        assert desc_a.run_id != desc_b.run_id
        started = [line["message"] for line in await job_logs(b.pool, job_id)]
        assert any(m.startswith(f"Job started (workflow {handle_b.id}, ") for m in started)
        started = [line["message"] for line in await job_logs(a.pool, job_id)]
        assert any(m.startswith(f"Job started (workflow {handle_a.id}, ") for m in started)

        # B cancels its job N: B's run ends REVOKED, A's job N runs on untouched.
        await b.actions.cancel(job_id)
        await status_is(b.pool, job_id, JobState.REVOKED)

        async def b_closed() -> WorkflowExecutionStatus | None:
            status = (await handle_b.describe()).status
            return None if status == WorkflowExecutionStatus.RUNNING else status

        assert await eventually(b_closed, within=60) == WorkflowExecutionStatus.CANCELED
        assert (await handle_a.describe()).status == WorkflowExecutionStatus.RUNNING
        assert await job_status(a.pool, job_id) == JobState.STARTED
        assert not [line for line in await job_logs(a.pool, job_id) if "ancel" in line["message"]]

        # Both go on to the end with their own images: A's run, and a retry of B's.
        await b.actions.retry(job_id)
        async with (
            fake_adc(a, temporal_client, job_a.seeded.pipeline_slug),
            fake_adc(b, temporal_client, job_b.seeded.pipeline_slug),
        ):
            await status_is(a.pool, job_id, JobState.SUCCESS, within=120)
            await status_is(b.pool, job_id, JobState.SUCCESS, within=120)
        for d, images in ((a, 6), (b, 4)):
            row = await fetch_one(
                d.pool,
                "SELECT count(*) FILTER (WHERE status = 'processed') AS done, count(*) AS n"
                " FROM job_images WHERE job_id = %s",
                job_id,
            )
            assert row == {"done": images, "n": images}
        assert (await handle_a.describe()).status == WorkflowExecutionStatus.COMPLETED
        assert (await handle_b.describe()).status == WorkflowExecutionStatus.COMPLETED


# --- row 8: a second worker of other settings on the same task queue -------------------------


async def fingerprinted_pollers(client: Client, queue: str) -> set[str]:
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return {p.identity for p in described.pollers if " antenna-jobs/1 " in p.identity}


async def start_worker(settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    """``antenna-jobs worker`` that is expected to exit at once; its exit code and output."""
    full = child_env(settings, ANTENNA_JOBS_RECONCILE_INTERVAL="0", COLUMNS="400", **env)
    return await asyncio.to_thread(
        subprocess.run,
        [str(VENV_BIN / "antenna-jobs"), "worker"],
        env=full,
        capture_output=True,
        text=True,
        timeout=90,
    )


async def test_a_worker_of_other_settings_on_the_same_task_queue_refuses_to_start(
    settings: Settings, pool: Any, temporal_client: Client, tmp_path: Path
):
    queue = settings.jobs.task_queue
    schema = settings.database.schema_name
    other_db = settings.database.url.rsplit("/", 1)[0] + "/postgres"
    with worker_processes(settings, tmp_path) as workers:
        workers.start()
        await eventually(lambda: fingerprinted_pollers(temporal_client, queue), within=60)
        # Another worker of the same settings joins (scale-out is unchanged).
        workers.start()

        async def two() -> set[str]:
            found = await fingerprinted_pollers(temporal_client, queue)
            return found if len(found) >= 2 else set()

        serving = await eventually(two, within=60)

        refused = {
            "ANTENNA_JOBS_NAME_PREFIX": {"ANTENNA_JOBS_NAME_PREFIX": "other_"},
            "ANTENNA_JOBS_DATABASE_SCHEMA": {"ANTENNA_JOBS_DATABASE_SCHEMA": f"{schema}_other"},
            "ANTENNA_JOBS_DATABASE_JOBS_SCHEMA": {
                "ANTENNA_JOBS_DATABASE_JOBS_SCHEMA": f"{schema}_other_jobs"
            },
            "ANTENNA_JOBS_DATABASE_URL": {"ANTENNA_JOBS_DATABASE_URL": other_db},
        }
        try:
            for setting, env in refused.items():
                done = await start_worker(settings, **env)
                out = done.stdout + done.stderr
                assert done.returncode == 1, out
                assert f"{setting} differs" in out, out
                assert f"task queue {queue!r} is served by worker" in out, out
                assert any(identity in out for identity in serving), out
                others = [s for s in refused if s != setting]
                assert not [s for s in others if f"{s} differs" in out], out
        finally:
            # A refused worker stops before it migrates: nothing to drop unless that failed.
            for url, dropped in (
                (settings.database.url, (f"{schema}_other", f"{schema}_other_jobs")),
                (other_db, (settings.database.schema_name, settings.database.jobs_schema)),
            ):
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    for name in dropped:
                        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        assert all(proc.running() for proc in workers.started)


async def test_two_workers_of_other_settings_started_together_do_not_both_run(
    settings: Settings, pool: Any, tmp_path: Path
):
    """Both may pass the check before either polls: the check once their polls show stops
    them (or the later one was refused at once)."""
    with (
        worker_processes(settings, tmp_path / "a") as plain,
        worker_processes(settings, tmp_path / "b", ANTENNA_JOBS_NAME_PREFIX="other_") as other,
    ):
        started = [plain.start(), other.start()]

        async def settled() -> bool:
            return sum(proc.running() for proc in started) <= 1

        await eventually(settled, within=90, interval=0.5)
        stopped = [proc for proc in started if not proc.running()]
        assert stopped
        for proc in stopped:
            assert proc.proc is not None and proc.proc.returncode == 1
            assert "ANTENNA_JOBS_NAME_PREFIX differs" in proc.tail(), proc.tail()
