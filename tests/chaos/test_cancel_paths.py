"""Cancellation: every path (API, CLI, ``temporal workflow cancel``, the ``cancel`` signal) in
every phase (before the workflow starts, collect, publish, aggregation, results still arriving).

Each ends the same way: CANCELING at once (``/tasks/`` answers ``[]``), the running activity
stops at its next heartbeat, stream/consumer/Redis keys/inbox rows are removed and stay removed,
the job is REVOKED with ``finished_at``, the workflow closes CANCELED, a late result is answered
``discarded`` and saves nothing, and a second cancel is refused with the current status.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time

import pytest
from nats.js.errors import NotFoundError
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from typer.testing import CliRunner

from antenna_db import job_store
from cli.fakes.worker import FakeWorker, FakeWorkerConfig
from cli.main import app as cli_app
from core.states import JobState
from job_control.actions import JobActions
from tests.helpers import eventually
from tests.helpers.api import Api
from tests.helpers.chaos import hold_collect, hold_no_url_failure, pick, record_recovery
from tests.helpers.db import NAMES
from tests.helpers.jobs import entry, make_job, success_result
from tests.helpers.processes import VENV_BIN, cli_env
from tests.helpers.settings import SHORT_HEARTBEATS, with_settings
from tests.helpers.temporal import running_workers, wait_activity

pytestmark = pytest.mark.slow
PATHS = ["api", "cli", "temporal_cancel", "temporal_signal"]
PHASES = ["before_start", "collect", "publish", "aggregation", "posting"]
ALL = [(path, phase) for phase in PHASES for path in PATHS]
# CI: every path and every phase at least once (a Latin diagonal), `make chaos`: all of them.
BOUNDED = [(PATHS[i % len(PATHS)], phase) for i, phase in enumerate(PHASES)] + [
    ("temporal_cancel", "aggregation"),
    ("temporal_signal", "collect"),
    ("cli", "publish"),
]
CASES = pick(BOUNDED, ALL)
IMAGES = 60
PAGE = 20


@pytest.fixture
def settings(settings):
    """Short heartbeats, so a cancel reaches a running activity within about a second."""
    return with_settings(settings, jobs={**SHORT_HEARTBEATS, "publish_page_size": PAGE})


async def cancel_by(path: str, job_id: int, settings, actions: JobActions, api: Api) -> None:
    wid = NAMES.workflow_id(job_id)
    address = ["--address", settings.temporal.address]
    if path == "api":
        response = await api.client.post(f"/jobs/{job_id}/cancel/")
        assert response.status_code == 200, response.text
        assert response.json()["status"] in {JobState.CANCELING, JobState.REVOKED}
    elif path == "cli":
        result = await asyncio.to_thread(
            CliRunner().invoke, cli_app, ["job", "cancel", str(job_id)], env=cli_env(settings)
        )
        assert result.exit_code == 0, result.output
    else:
        if path == "temporal_cancel":
            command = ["workflow", "cancel", "-w", wid]
        else:
            command = ["workflow", "signal", "-w", wid, "--name", "cancel", "-i", '"by signal"']
        done = await asyncio.to_thread(
            subprocess.run,
            [str(VENV_BIN / "temporal"), *command, *address],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr


async def status_of(pool, job_id: int) -> JobState:
    async with pool.connection() as conn:
        return await job_store.get_status(conn, job_id)


async def queue_left(resources, redis_client, pool, job_id: int) -> list[str]:
    left = []
    try:
        await resources.js.stream_info(NAMES.stream(job_id))
        left.append("stream")
    except NotFoundError:
        pass
    if await redis_client.exists(*NAMES.redis_keys(job_id)):
        left.append("redis keys")
    if await count_rows(pool, "result_inbox", job_id):
        left.append("inbox rows")
    return left


async def count_rows(pool, table: str, job_id: int) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(f"SELECT count(*) AS n FROM {table} WHERE job_id = %s", (job_id,))
        return (await cur.fetchone())["n"]


async def detections(pool, job_id: int) -> int:
    return await count_rows(pool, "job_detections", job_id)


async def activity_stop_latency(handle, name: str) -> float | None:
    """Seconds from the workflow's cancel request to the end of the activity that was running.

    It ends cancelled (the cancel came with a heartbeat), or failed as JobCancelled (its own
    check of the job row, every heartbeat interval, saw CANCELING first): both stop it."""
    requested = None
    scheduled: dict[int, str] = {}
    async for event in handle.fetch_history_events():
        when = event.event_time.ToDatetime().timestamp()
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
            requested = requested or when
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = attrs.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
            attrs = event.activity_task_canceled_event_attributes
            if scheduled.get(attrs.scheduled_event_id) == name and requested is not None:
                return when - requested
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            attrs = event.activity_task_failed_event_attributes
            failure = attrs.failure.application_failure_info.type
            if scheduled.get(attrs.scheduled_event_id) == name and failure == "JobCancelled":
                return when - requested if requested is not None else 0.0
    return None


@pytest.mark.parametrize(("path", "phase"), CASES)
async def test_cancel(
    path, phase, settings, pool, temporal_client, api: Api, redis_client, nats_client
):
    job, seeded, _ = await make_job(pool, images=IMAGES, shuffle=False)
    actions = JobActions(pool, temporal_client, settings)
    handle = temporal_client.get_workflow_handle(NAMES.workflow_id(job.id))
    running_activity = {
        "collect": "collect_images",
        "publish": "publish_tasks",
        "aggregation": "aggregate_results",
        "posting": "aggregate_results",
    }.get(phase)
    async with contextlib.AsyncExitStack() as stack:
        if phase == "collect":
            hold = await stack.enter_async_context(hold_collect(settings, job.id))
        elif phase == "publish":
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT sourceimage_id AS source_image_id"
                    " FROM main_sourceimagecollection_images WHERE sourceimagecollection_id = %s"
                    " ORDER BY source_image_id OFFSET %s LIMIT 1",
                    (seeded.collection_id, PAGE + PAGE // 2),
                )
                no_url = (await cur.fetchone())["source_image_id"]
                await conn.execute(
                    "UPDATE main_sourceimage SET public_base_url = NULL WHERE id = %s", (no_url,)
                )
            hold = await stack.enter_async_context(hold_no_url_failure(settings, job.id, no_url))
        if phase != "before_start":
            resources = await stack.enter_async_context(running_workers(temporal_client, settings))
        await actions.run(job.id)
        fake = None
        if phase in {"collect", "publish"}:
            await hold.wait_blocked()
        elif phase == "aggregation":
            await wait_activity(handle, "aggregate_results")
        elif phase == "posting":
            fake = FakeWorker(
                FakeWorkerConfig(
                    api_url="http://testserver",
                    token=api.key,
                    concurrency=2,
                    batch_size=4,
                    delay=0.1,
                    pipelines=[seeded.pipeline_slug],
                    poll_interval=0.1,
                ),
                transport=api.client._transport,
            )
            fake_run = asyncio.create_task(fake.run())
            stack.push_async_callback(lambda: asyncio.wait_for(fake_run, 30))
            stack.callback(fake.stop)

            async def some_saved():
                return await detections(pool, job.id) > 0

            await eventually(some_saved, within=30)

        started = time.monotonic()
        await cancel_by(path, job.id, settings, actions, api)
        if phase == "before_start":
            # Nothing ran yet; the API and CLI wrote CANCELING, Temporal's paths need a worker.
            if path in {"api", "cli"}:
                assert await status_of(pool, job.id) == JobState.CANCELING
            resources = await stack.enter_async_context(running_workers(temporal_client, settings))

        async def canceling():
            detail = await api.client.get(f"/jobs/{job.id}/")
            return detail.json()["status"] in {JobState.CANCELING, JobState.REVOKED}

        # At once: the API and CLI write it themselves; through Temporal it is the workflow's
        # first step on the cancel (no worker yet before the start: then when one comes).
        await eventually(canceling, within=2 if phase != "before_start" else 30)
        if phase != "before_start":
            record_recovery(f"cancel/{path}/{phase}: CANCELING", time.monotonic() - started)
        tasks = await api.client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 10})
        assert tasks.status_code == 200 and tasks.json() == {"tasks": []}
        if phase == "collect":
            # The collect statement itself is cancelled, while the hold is still held.
            await eventually(lambda: _none(hold.waiting_pids()), within=10)

        async def revoked():
            return await status_of(pool, job.id) == JobState.REVOKED

        await eventually(revoked, within=30)
        record_recovery(f"cancel/{path}/{phase}", time.monotonic() - started)

        async def closed():
            return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING

        await eventually(closed, within=30)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
        if running_activity is not None:
            latency = await activity_stop_latency(handle, running_activity)
            assert latency is not None, f"{running_activity} did not stop on the cancel"
            assert latency < settings.jobs.heartbeat_timeout.total_seconds() + 2
        if fake is not None:
            fake.stop()
            await asyncio.wait_for(fake_run, 30)
        saved = await detections(pool, job.id)
        assert await queue_left(resources, redis_client, pool, job.id) == []
        await asyncio.sleep(2 * settings.jobs.heartbeat_interval.total_seconds() + 0.5)
        assert await queue_left(resources, redis_client, pool, job.id) == []

    async with pool.connection() as conn:
        done = await job_store.get_job(conn, job.id)
        logs = [r["message"] for r in await job_store.latest_logs(conn, job.id, 100)]
    assert done.status == JobState.REVOKED and done.finished_at is not None
    assert any(m.startswith("Job revoked") for m in logs)
    if phase == "collect":
        assert await count_rows(pool, "job_images", job.id) == 0

    # A late result: answered discarded, nothing saved, status unchanged.
    late = {"image_id": "1", "image_url": "http://x/1.jpg", "reply_subject": "$JS.ACK.x"}
    response = await api.client.post(
        f"/jobs/{job.id}/result/", json={"results": [entry(late, success_result(late))]}
    )
    assert response.status_code == 200 and response.json()["status"] == "discarded"
    assert await detections(pool, job.id) == saved
    again = await api.client.post(f"/jobs/{job.id}/cancel/")
    assert again.status_code == 409 and again.json()["status"] == JobState.REVOKED
    refused = await asyncio.to_thread(
        CliRunner().invoke, cli_app, ["job", "cancel", str(job.id)], env=cli_env(settings)
    )
    assert refused.exit_code == 1
    assert f"job {job.id} is REVOKED: cannot cancel" in refused.stderr
    assert await status_of(pool, job.id) == JobState.REVOKED


async def _none(pids) -> bool:
    return not await pids
