"""Every job type but ml, in Antenna mode, runs Antenna's own code under AntennaTaskWorkflow.

Against the real services: a database made by Antenna's migrations, RabbitMQ, Temporal, our
worker and bridge in-process, and a real Celery worker process standing in for Antenna's
(tests/fakes/antenna_worker.py: registers ``ami.jobs.tasks.run_job`` and writes the row, its
progress and logs as Antenna's JobType.run does). Jobs are created as Antenna creates them and
started by its Run button (the row as Job.enqueue writes it, run_job sent to the bridge's
queue); each test has its own queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer

from activities.antenna_task.celery_link import AntennaCelery
from activities.antenna_task.models import SendInput, TaskOutcome
from activities.antenna_task.runner import AntennaTaskActivities
from antenna_db.seed import seed
from bridge.main import run_bridge
from core import naming
from core.settings import AntennaSettings, Settings
from core.states import JobState
from job_control.actions import JobActions
from tests.helpers import eventually
from tests.helpers.antenna import Recipe, enqueue_as_antenna
from tests.helpers.antenna_celery import (
    AntennaCeleryWorker,
    antenna_celery_worker,
    pid_alive,
    revoke_as_antenna,
)
from tests.helpers.broker import BROKER_URL, delete_queue, queue_depth, send_run_job
from tests.helpers.processes import worker_processes
from tests.helpers.settings import with_crashes, with_settings
from tests.helpers.temporal import job_handle, running_workers
from workflows.antenna_task_workflow import AntennaTaskWorkflow

EMPTY_PROGRESS = {"summary": {"status": "CREATED", "progress": 0}, "stages": []}


@dataclass
class Stack:
    settings: Settings
    pool: Any
    celery: AntennaCeleryWorker
    jobs_queue: str
    client: Any


@contextlib.asynccontextmanager
async def antenna_stack(
    settings: Settings,
    antenna_database: Any,
    antenna_pool: Any,
    temporal_client: Any,
    queue: str,
    tmp_path: Path,
    *,
    duration: float,
    lost_after: float = 3.0,
    in_process: bool = True,
) -> AsyncIterator[Stack]:
    """Antenna's Celery worker (the stand-in), our worker and bridge on Antenna's database and
    broker, with short polls and a short lost-task bound (``in_process=False``: no worker here,
    the test runs worker processes it may kill)."""
    with antenna_celery_worker(antenna_database, tmp_path, duration) as celery:
        real = with_crashes(
            settings,
            database=antenna_database,
            antenna=AntennaSettings(
                broker_url=BROKER_URL,
                jobs_queue=queue,
                task_queue=celery.queue,
                task_poll_interval=0.2,
                task_poll_max=1,
                control_timeout=0.5,
                task_lost_after=lost_after,
            ),
        )
        ready = asyncio.Event()
        bridge = asyncio.create_task(run_bridge(real, ready=ready))
        try:
            async with contextlib.AsyncExitStack() as workers:
                if in_process:
                    await workers.enter_async_context(running_workers(temporal_client, real))
                await asyncio.wait_for(ready.wait(), 30)
                await eventually(celery.ready, within=60, interval=0.5)
                yield Stack(real, antenna_pool, celery, queue, temporal_client)
        finally:
            bridge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bridge


async def new_job(pool: Any, recipe: Recipe, key: str) -> int:
    """A CREATED job of type ``key`` as Antenna's API creates it (dispatch mode internal, the
    foreign keys its type needs, an export row for data_export)."""
    async with pool.connection() as conn:
        export = None
        if key == "data_export":
            cur = await conn.execute(
                "INSERT INTO exports_dataexport (created_at, updated_at, format, filters,"
                " filters_display, file_url, record_count, file_size, project_id, user_id)"
                " VALUES (now(), now(), 'occurrences_simple_csv', '{}', '{}', NULL, 0, 0, %s,"
                " %s) RETURNING id",
                (recipe["project"], recipe["user"]),
            )
            export = (await cur.fetchone())["id"]
        params = {"task": "class_masking", "config": {}} if key == "post_processing" else None
        cur = await conn.execute(
            "INSERT INTO jobs_job (created_at, updated_at, name, queue, status, progress, logs,"
            " params, delay, shuffle, job_type_key, project_id, deployment_id,"
            " source_image_collection_id, data_export_id, dispatch_mode)"
            " VALUES (now(), now(), %s, 'default', 'CREATED', %s, '{\"stdout\": [],"
            " \"stderr\": []}', %s, 0, true, %s, %s, %s, %s, %s, 'internal') RETURNING id",
            (
                f"A {key} job",
                json.dumps(EMPTY_PROGRESS),
                json.dumps(params) if params else None,
                key,
                recipe["project"],
                recipe["deployment"],
                recipe["collection"],
                export,
            ),
        )
        return int((await cur.fetchone())["id"])


async def run_as_antenna(stack: Stack, job_id: int) -> None:
    """Antenna's Run button: the row as Job.enqueue writes it, then run_job to the bridge."""
    await enqueue_as_antenna(stack.pool, job_id)
    await send_run_job(stack.jobs_queue, job_id)


async def row(pool: Any, job_id: int) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM jobs_job WHERE id = %s", (job_id,))
        found = await cur.fetchone()
    assert found is not None
    return dict(found)


async def logs(pool: Any, job_id: int) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT level, message, context FROM jobs_joblog WHERE job_id = %s ORDER BY id",
            (job_id,),
        )
        return list(await cur.fetchall())


async def runs(pool: Any, job_id: int, word: str) -> list[dict[str, Any]]:
    """The stand-in's "Running job" / "Finished job" lines of the job."""
    return [r for r in await logs(pool, job_id) if r["message"].startswith(f"{word} job #")]


async def final(pool: Any, job_id: int, within: float = 60) -> JobState:
    async def check() -> JobState | None:
        status = JobState((await row(pool, job_id))["status"])
        return status if status in {JobState.SUCCESS, JobState.FAILURE, JobState.REVOKED} else None

    return await eventually(check, within=within, interval=0.2)


async def closed(client: Any, job_id: int) -> WorkflowExecutionStatus:
    async def check() -> WorkflowExecutionStatus | None:
        desc = await job_handle(client, job_id).describe()
        return None if desc.status == WorkflowExecutionStatus.RUNNING else desc.status

    return await eventually(check, within=60, interval=0.2)


async def replays(client: Any, job_id: int) -> None:
    """The recorded history replays on the current code (the workflow is deterministic)."""
    history = await job_handle(client, job_id).fetch_history()
    replayer = Replayer(workflows=[AntennaTaskWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


async def running_pid(pool: Any, job_id: int) -> int:
    started = await eventually(lambda: runs(pool, job_id, "Running"), within=60, interval=0.2)
    return int(started[-1]["context"]["pid"])


@pytest.fixture
def antenna_job(
    settings, antenna_database, antenna_pool, antenna_recipe, temporal_client, queue, tmp_path
) -> Callable[..., AbstractAsyncContextManager[tuple[Stack, int]]]:
    """A new job of a type (Antenna's key), run as Antenna runs it unless not ``started``, on a
    stack whose Antenna tasks last ``duration`` seconds (``more``: antenna_stack's other
    options): (stack, job id) until the block ends."""

    @contextlib.asynccontextmanager
    async def run(
        job_type: str, duration: float, started: bool = True, **more: Any
    ) -> AsyncIterator[tuple[Stack, int]]:
        async with antenna_stack(
            settings,
            antenna_database,
            antenna_pool,
            temporal_client,
            queue,
            tmp_path,
            duration=duration,
            **more,
        ) as stack:
            job_id = await new_job(stack.pool, antenna_recipe, job_type)
            if started:
                await run_as_antenna(stack, job_id)
            yield stack, job_id

    return run


@pytest.mark.parametrize(
    "key",
    [
        "regroup_events",
        "data_storage_sync",
        "post_processing",
        "data_export",
        "populate_captures_collection",
        # A job type Antenna has and antenna-jobs does not know.
        "train_classifier",
    ],
)
async def test_every_job_type_but_ml_runs_antennas_own_code_to_success(antenna_job, key) -> None:
    async with antenna_job(key, duration=1) as (stack, job_id):
        assert await final(stack.pool, job_id) == JobState.SUCCESS
        assert await closed(stack.client, job_id) == WorkflowExecutionStatus.COMPLETED
        desc = await job_handle(stack.client, job_id).describe()
        assert desc.workflow_type == naming.ANTENNA_TASK_WORKFLOW
        await replays(stack.client, job_id)

        job = await row(stack.pool, job_id)
        # Antenna's code ran once and wrote its own progress, times and result.
        assert len(await runs(stack.pool, job_id, "Running")) == 1
        assert len(await runs(stack.pool, job_id, "Finished")) == 1
        assert job["progress"]["summary"] == {"status": "SUCCESS", "progress": 1.0}
        assert job["progress"]["stages"] and all(
            s["status"] == "SUCCESS" for s in job["progress"]["stages"]
        )
        assert job["started_at"] is not None and job["finished_at"] >= job["started_at"]
        # The task it ran was ours, with the id written into the row before it was sent.
        messages = [r["message"] for r in await logs(stack.pool, job_id)]
        sent = [m for m in messages if m.startswith("Sent Antenna's run_job to queue")]
        assert sent == [
            f"Sent Antenna's run_job to queue {stack.celery.queue!r} (task {job['task_id']})"
        ]
        if key == "data_export":
            async with stack.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT file_url FROM exports_dataexport WHERE id = %s",
                    (job["data_export_id"],),
                )
                export = await cur.fetchone()
            assert job["result"] == {"file_url": export["file_url"]}
        if key == "populate_captures_collection":
            params = {p["key"]: p["value"] for p in job["progress"]["stages"][0]["params"]}
            assert params["captures_added"] > 0


async def test_a_type_antenna_does_not_know_either_fails_with_antennas_reason(
    antenna_job,
) -> None:
    async with antenna_job("no_such_type", duration=1) as (stack, job_id):
        assert await final(stack.pool, job_id) == JobState.FAILURE
        assert await closed(stack.client, job_id) == WorkflowExecutionStatus.FAILED
        messages = [r["message"] for r in await logs(stack.pool, job_id)]
        assert any("Unknown job type 'no_such_type'" in m for m in messages)


async def cancel_from_antennas_ui(stack: Stack, job_id: int) -> None:
    """Antenna's Job.cancel of a Celery-run job: guarded CANCELING, then revoke the row's task
    with terminate (the row stays CANCELING: Antenna has no task_revoked handler)."""
    async with stack.pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs_job SET status = 'CANCELING', updated_at = now() WHERE id = %s"
            " AND status IN ('CREATED', 'PENDING', 'STARTED', 'RETRY')",
            (job_id,),
        )
    task_id = (await row(stack.pool, job_id))["task_id"]
    await asyncio.to_thread(revoke_as_antenna, task_id)


async def cancel_from_our_api(stack: Stack, job_id: int) -> None:
    await JobActions(stack.pool, stack.client, stack.settings).cancel(job_id)


async def cancel_from_temporal(stack: Stack, job_id: int) -> None:
    """``temporal workflow cancel`` (and the Web UI's button)."""
    await job_handle(stack.client, job_id).cancel()


async def cancel_signal(stack: Stack, job_id: int) -> None:
    """``temporal workflow signal --name cancel``."""
    await job_handle(stack.client, job_id).signal("cancel", "cancel signal from a test")


@pytest.mark.parametrize(
    "cancel", [cancel_from_antennas_ui, cancel_from_our_api, cancel_from_temporal, cancel_signal]
)
async def test_a_cancel_terminates_the_task_and_ends_revoked(antenna_job, cancel) -> None:
    async with antenna_job("regroup_events", duration=60) as (stack, job_id):
        pid = await running_pid(stack.pool, job_id)
        assert pid_alive(pid)
        await cancel(stack, job_id)
        assert await final(stack.pool, job_id) == JobState.REVOKED
        assert await closed(stack.client, job_id) == WorkflowExecutionStatus.CANCELED
        await replays(stack.client, job_id)
        # The Celery child running Antenna's code was terminated, not left to finish.
        await eventually(lambda: not pid_alive(pid), within=30, interval=0.2)
        assert await runs(stack.pool, job_id, "Finished") == []
        job = await row(stack.pool, job_id)
        assert job["status"] == "REVOKED" and job["finished_at"] is not None
        revoked = [
            r for r in await logs(stack.pool, job_id) if r["message"].startswith("Revoked Antenna")
        ]
        assert revoked and revoked[-1]["context"]["terminated"] is True


@pytest.mark.chaos
async def test_antennas_worker_killed_mid_task_then_restarted_runs_the_job_to_the_end_once(
    antenna_job,
) -> None:
    async with antenna_job("data_storage_sync", duration=4) as (stack, job_id):
        first = await running_pid(stack.pool, job_id)
        stack.celery.kill()  # the worker and its children: the acked message goes with them
        await eventually(lambda: not pid_alive(first), within=30, interval=0.1)
        assert (await row(stack.pool, job_id))["status"] == "STARTED"
        stack.celery.start()
        assert await final(stack.pool, job_id, within=90) == JobState.SUCCESS
        assert await closed(stack.client, job_id) == WorkflowExecutionStatus.COMPLETED
        # Run twice (the first killed), finished once; nothing was sent after the row was final.
        assert len(await runs(stack.pool, job_id, "Running")) == 2
        assert len(await runs(stack.pool, job_id, "Finished")) == 1
        messages = [r["message"] for r in await logs(stack.pool, job_id)]
        assert len([m for m in messages if m.startswith("Sent Antenna's run_job")]) == 2
        assert any(m.startswith("Sent Antenna's run_job again") for m in messages)
        await replays(stack.client, job_id)


async def test_standalone_refuses_a_type_only_antennas_code_runs_with_the_reason(
    pool, temporal_client, settings, job_workers
) -> None:
    """Without Antenna's broker there is no Antenna code to run regroup_events: the job fails
    at start saying so (it used to fail with a KeyError), and nothing is left running."""
    async with pool.connection() as conn:
        seeded = await seed(conn, 1)
    recipe = Recipe(
        ids={
            "project": seeded.project_id,
            "deployment": seeded.deployment_id,
            "collection": seeded.collection_id,
            "user": 0,
        },
        token="",
    )
    job_id = await new_job(pool, recipe, "regroup_events")
    await JobActions(pool, temporal_client, settings).run(job_id)
    assert await final(pool, job_id) == JobState.FAILURE
    assert await closed(temporal_client, job_id) == WorkflowExecutionStatus.FAILED
    desc = await job_handle(temporal_client, job_id).describe()
    assert desc.workflow_type == naming.INTERNAL_JOB_WORKFLOW
    messages = [r["message"] for r in await logs(pool, job_id)]
    assert any("only Antenna's own code runs it" in m for m in messages), messages


@pytest.mark.chaos
async def test_our_worker_killed_while_antennas_code_runs_neither_loses_nor_repeats_the_job(
    antenna_job, tmp_path
) -> None:
    running = antenna_job("post_processing", duration=6, started=False, in_process=False)
    async with running as (stack, job_id):
        with worker_processes(stack.settings, tmp_path) as workers:
            first = workers.start()
            await JobActions(stack.pool, stack.client, stack.settings).run(job_id)
            pid = await running_pid(stack.pool, job_id)
            first.kill()  # mid-wait: the wait activity's heartbeats stop
            workers.start()
            assert await final(stack.pool, job_id, within=90) == JobState.SUCCESS
            assert await closed(stack.client, job_id) == WorkflowExecutionStatus.COMPLETED
        # Antenna's task ran on through our crash, once; the new worker only waited for it.
        assert [r["context"]["pid"] for r in await runs(stack.pool, job_id, "Running")] == [pid]
        assert len(await runs(stack.pool, job_id, "Finished")) == 1
        messages = [r["message"] for r in await logs(stack.pool, job_id)]
        assert len([m for m in messages if m.startswith("Sent Antenna's run_job")]) == 1
        await replays(stack.client, job_id)


async def test_a_retried_send_publishes_no_second_message_and_a_failed_one_is_undone(
    settings, antenna_database, antenna_pool, antenna_recipe, queue
) -> None:
    """send_run_job's idempotence, on the real broker: the task id is written into the row
    before the publish, so an attempt that finds it there publishes nothing; a publish that
    raised puts the row's previous task id back, so its retry publishes."""
    task_queue = f"{queue}-tasks"
    real = with_settings(
        settings,
        database=antenna_database,
        antenna=AntennaSettings(broker_url=BROKER_URL, task_queue=task_queue),
    )
    job_id = await new_job(antenna_pool, antenna_recipe, "regroup_events")
    antennas = await enqueue_as_antenna(antenna_pool, job_id)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=f"job-{job_id}", workflow_run_id="r1")
    celery = AntennaCelery(real.antenna)
    try:
        sends = AntennaTaskActivities(antenna_pool, real, celery)
        first = await env.run(sends.send_run_job, SendInput(job_id=job_id))
        again = await env.run(sends.send_run_job, SendInput(job_id=job_id))
        assert first.outcome == again.outcome == TaskOutcome.SENT
        assert first.task_id == again.task_id == (await row(antenna_pool, job_id))["task_id"]
        assert await asyncio.to_thread(queue_depth, task_queue) == 1

        # The broker unreachable: the publish raises and the row's task id is put back.
        down = with_settings(real, antenna={"broker_url": "amqp://guest:guest@127.0.0.1:1//"})
        broken = AntennaCelery(down.antenna)
        try:
            other = dataclasses.replace(env.info, workflow_run_id="r2")
            env.info = other
            with pytest.raises(Exception):  # noqa: B017 - whatever kombu raises for a refusal
                await env.run(
                    AntennaTaskActivities(antenna_pool, down, broken).send_run_job,
                    SendInput(job_id=job_id),
                )
        finally:
            broken.close()
        assert (await row(antenna_pool, job_id))["task_id"] == first.task_id != antennas
    finally:
        celery.close()
        delete_queue(task_queue)
