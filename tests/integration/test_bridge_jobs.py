"""Antenna's Run/Retry buttons through the bridge: run_job messages sent as Antenna sends them,
JobActions.start_for_antenna, the real Temporal dev server and the in-process job workers.

Antenna's enqueue writes PENDING (and a fresh task id) before it sends run_job; the tests do the
same with a guarded status write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from antenna_db import job_store
from antenna_db.seed import seed
from bridge.dead_letters import list_dead_letters
from bridge.main import run_bridge
from core.bridge_outcome import BridgeOutcome
from core.job_requests import NewInternalJob
from core.progress import reset_progress
from core.settings import AntennaSettings
from core.states import JobState, JobType
from job_control.actions import JobActions
from storage import bridge_reports
from tests.helpers import eventually
from tests.helpers.broker import (
    BROKER_URL,
    Hooks,
    dead_letter_depth,
    queue_depth,
    running_consumer,
    send_run_job,
)
from tests.helpers.db import get_job, job_logs
from tests.helpers.jobs import make_job
from tests.helpers.processes import VENV_BIN, child_env, child_process, sigterm_exit_code
from tests.helpers.settings import with_settings
from tests.helpers.temporal import job_handle, run_reconcile, running_workers

BRIDGE_LOG = "Run started from Antenna's run_job message"


async def pending_job(pool, images: int = 5):
    """An ASYNC_API job as Antenna's Run button leaves it: PENDING, message not yet sent."""
    async with pool.connection() as conn:
        seeded = await seed(conn, images)
    job = (await make_job(pool, seeded=seeded, shuffle=False)).job
    async with pool.connection() as conn:
        assert await job_store.transition(conn, job.id, JobState.PENDING, [JobState.CREATED])
    return job


async def status_of(pool, job_id: int) -> JobState:
    return (await get_job(pool, job_id)).status


async def run_id(client, job_id: int) -> str | None:
    try:
        desc = await job_handle(client, job_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return desc.run_id if desc.status == WorkflowExecutionStatus.RUNNING else None


async def cancel_and_wait(actions: JobActions, client, job_id: int) -> None:
    await actions.cancel(job_id, "test end")
    with contextlib.suppress(WorkflowFailureError):
        await asyncio.wait_for(job_handle(client, job_id).result(), 60)


class Outcomes:
    """start_for_antenna, recording what it answered per message."""

    def __init__(self, actions: JobActions) -> None:
        self.actions = actions
        self.seen: list[tuple[int, BridgeOutcome]] = []

    async def __call__(self, job_id: int, task_id: str) -> BridgeOutcome:
        outcome = await self.actions.start_for_antenna(job_id, task_id)
        self.seen.append((job_id, outcome))
        return outcome

    async def count(self, n: int) -> None:
        async def enough():
            return len(self.seen) >= n

        await eventually(enough, within=30)


async def test_run_job_messages_start_join_and_skip(
    pool, temporal_client, settings, job_workers, queue
):
    actions = JobActions(pool, temporal_client, settings)
    outcomes = Outcomes(actions)
    job = await pending_job(pool)
    finished = (await make_job(pool, seeded=await seed_in(pool), shuffle=False)).job
    async with pool.connection() as conn:
        await job_store.transition(
            conn, finished.id, JobState.REVOKED, [JobState.CREATED], finished=True
        )

    async with running_consumer(queue, outcomes):
        task_id = await send_run_job(queue, job.id)
        await outcomes.count(1)
        assert outcomes.seen == [(job.id, BridgeOutcome.STARTED)]
        first_run = await run_id(temporal_client, job.id)
        assert first_run is not None

        async def left_pending():
            return await status_of(pool, job.id) != JobState.PENDING

        await eventually(left_pending, within=30)
        assert await status_of(pool, job.id) == JobState.STARTED  # no ADC worker: it waits
        lines = [r for r in await job_logs(pool, job.id) if BRIDGE_LOG in r["message"]]
        assert len(lines) == 1 and task_id in lines[0]["message"]
        assert lines[0]["context"]["workflow_run_id"] == first_run

        # Antenna's Run button pressed again while the job runs: the one run is joined.
        await send_run_job(queue, job.id)
        # A stale message for a final job, and one for a job that does not exist.
        await send_run_job(queue, finished.id)
        await send_run_job(queue, 1)
        await outcomes.count(4)
        # Up to `prefetch` starts run side by side: any order.
        assert set(outcomes.seen[1:]) == {
            (job.id, BridgeOutcome.ALREADY_RUNNING),
            (finished.id, BridgeOutcome.FINAL),
            (1, BridgeOutcome.MISSING),
        }
        assert await run_id(temporal_client, job.id) == first_run
        assert await run_id(temporal_client, finished.id) is None
        assert await status_of(pool, finished.id) == JobState.REVOKED
        lines = [r for r in await job_logs(pool, job.id) if BRIDGE_LOG in r["message"]]
        assert len(lines) == 1

        # Antenna's Retry button after a cancel: RETRY then PENDING, then run_job: a new run.
        await cancel_and_wait(actions, temporal_client, job.id)
        assert await status_of(pool, job.id) == JobState.REVOKED
        current = await get_job(pool, job.id)
        async with pool.connection() as conn:
            assert await job_store.transition(
                conn,
                job.id,
                JobState.RETRY,
                [JobState.REVOKED],
                progress=reset_progress(current.progress),
            )
            assert await job_store.transition(conn, job.id, JobState.PENDING, [JobState.RETRY])
        await send_run_job(queue, job.id)
        await outcomes.count(5)
        assert outcomes.seen[4] == (job.id, BridgeOutcome.STARTED)
        second_run = await run_id(temporal_client, job.id)
        assert second_run not in (None, first_run)
        await eventually(left_pending, within=30)
        await cancel_and_wait(actions, temporal_client, job.id)
    assert await asyncio.to_thread(queue_depth, queue) == 0


async def seed_in(pool, images: int = 2):
    async with pool.connection() as conn:
        return await seed(conn, images)


async def test_run_bridge_wires_it_all_and_stops_on_cancel(
    pool, temporal_client, settings, job_workers, queue
):
    bridge_settings = with_settings(
        settings, antenna=AntennaSettings(broker_url=BROKER_URL, jobs_queue=queue)
    )
    job = await pending_job(pool)
    ready = asyncio.Event()
    bridge = asyncio.create_task(run_bridge(bridge_settings, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        await send_run_job(queue, job.id)

        async def started():
            return await status_of(pool, job.id) == JobState.STARTED

        await eventually(started, within=30)
        assert await run_id(temporal_client, job.id) is not None
    finally:
        bridge.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(bridge, 15)
    await cancel_and_wait(JobActions(pool, temporal_client, settings), temporal_client, job.id)
    assert await asyncio.to_thread(queue_depth, queue) == 0


async def test_run_bridge_needs_a_broker_url(settings):
    with pytest.raises(ValueError, match="ANTENNA_JOBS_ANTENNA_BROKER_URL"):
        await run_bridge(settings)


async def test_bridge_command_starts_jobs_and_exits_zero_on_sigterm(
    pool, temporal_client, settings, job_workers, queue
):
    env = child_env(
        settings,
        ANTENNA_JOBS_ANTENNA_BROKER_URL=BROKER_URL,
        ANTENNA_JOBS_ANTENNA_JOBS_QUEUE=queue,
    )
    job = await pending_job(pool)
    bridge = child_process(
        str(VENV_BIN / "antenna-jobs"), "bridge", env=env, stderr=asyncio.subprocess.PIPE
    )
    async with bridge as proc:
        assert proc.stderr is not None
        while b"consuming run_job messages" not in (
            line := await asyncio.wait_for(proc.stderr.readline(), 60)
        ):
            assert line, "the bridge exited before consuming"
        await send_run_job(queue, job.id)

        async def started():
            return await status_of(pool, job.id) == JobState.STARTED

        await eventually(started, within=30)
        assert await sigterm_exit_code(proc, 30) == 0
    await cancel_and_wait(JobActions(pool, temporal_client, settings), temporal_client, job.id)
    assert await asyncio.to_thread(queue_depth, queue) == 0


async def test_bridge_command_without_a_broker_url_says_so(settings):
    proc = await asyncio.create_subprocess_exec(
        str(VENV_BIN / "antenna-jobs"),
        "bridge",
        env=child_env(settings),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert b"ANTENNA_JOBS_ANTENNA_BROKER_URL" in err


async def test_a_run_clicked_while_the_bridge_is_down_ends_success(
    pool, temporal_client, settings, queue
):
    """The bridge is down (a deploy) when Antenna's Run is clicked: past the reconcile grace the
    job is started by reconcile, not failed; the bridge, back, finds it done and runs nothing."""
    settings = with_settings(settings, reconcile={"grace": timedelta(seconds=1)})
    actions = JobActions(pool, temporal_client, settings)
    async with pool.connection() as conn:
        seeded = await seed(conn, 6)
    job = await actions.create_internal(
        NewInternalJob(
            job_type=JobType.POPULATE_CAPTURES_COLLECTION,
            project_id=seeded.project_id,
            collection_id=seeded.collection_id,
            params={"method": "all"},
        )
    )
    async with pool.connection() as conn:  # Antenna's Job.enqueue: PENDING, a new task id
        assert await job_store.transition(
            conn, job.id, JobState.PENDING, [JobState.CREATED], enqueued=True
        )
    await send_run_job(queue, job.id)  # waits in the queue: no bridge consumes it
    async with running_workers(temporal_client, settings):

        async def started_by_reconcile():
            return job.id in (await run_reconcile(temporal_client, settings)).jobs.started

        await eventually(started_by_reconcile, within=60)
        result = await asyncio.wait_for(job_handle(temporal_client, job.id).result(), 60)
        assert result.status == JobState.SUCCESS
        assert await status_of(pool, job.id) == JobState.SUCCESS

        # The bridge is back: the waiting message finds the job final.
        outcomes = Outcomes(actions)
        async with running_consumer(queue, outcomes):
            await outcomes.count(1)
        assert outcomes.seen == [(job.id, BridgeOutcome.FINAL)]
        # A later reconcile pass leaves the finished job alone.
        report = await run_reconcile(temporal_client, settings)
        assert job.id not in report.jobs.started
        assert job.id not in {r.job_id for r in report.jobs.repaired}
    assert await status_of(pool, job.id) == JobState.SUCCESS
    assert await asyncio.to_thread(queue_depth, queue) == 0
    messages = [r["message"] for r in await job_logs(pool, job.id)]
    assert sum(m.startswith("Run started by reconcile") for m in messages) == 1
    assert not [m for m in messages if m.startswith("Reconciled:")]


async def test_a_row_the_bridge_cannot_read_is_dead_lettered_and_reported(
    pool, temporal_client, settings, job_workers, queue, cli_env
):
    """Ten job rows the bridge cannot read (here a status it does not know) are Run: each
    message is retried a bounded number of times, then dead-lettered with a line in the job's
    log, while a valid Run behind them starts; the bridge's report shows the dead letters."""
    bridge_settings = with_settings(
        settings,
        antenna=AntennaSettings(
            broker_url=BROKER_URL,
            jobs_queue=queue,
            max_attempts=2,
            retry_backoff=timedelta(seconds=0.1),
            report_interval=timedelta(seconds=0.2),
        ),
    )
    odd = [await pending_job(pool, images=1) for _ in range(10)]
    odd_ids = [job.id for job in odd]
    valid = await pending_job(pool, images=2)
    async with pool.connection() as conn:
        await conn.execute("UPDATE jobs_job SET status = 'MYSTERY' WHERE id = ANY(%s)", (odd_ids,))
    ready = asyncio.Event()
    bridge = asyncio.create_task(run_bridge(bridge_settings, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        for job_id in odd_ids:
            await send_run_job(queue, job_id)
        await send_run_job(queue, valid.id)

        seen: dict[str, object] = {}

        async def valid_started():
            seen["valid"] = await status_of(pool, valid.id)
            return seen["valid"] == JobState.STARTED

        async def reported():
            async with pool.connection() as conn:
                saved = {r.queue: r for r in await bridge_reports.latest(conn)}
            mine = seen["report"] = saved.get(queue)
            return mine if mine and mine.connected and mine.dead_lettered == 10 else None

        try:
            await eventually(valid_started, within=30)
            mine = await eventually(reported, within=30)
        except AssertionError as err:
            depth = await asyncio.to_thread(dead_letter_depth, queue)
            raise AssertionError(f"{err}; seen {seen}, dead letters {depth}") from err
        assert mine.foreign_consumers == 0 and mine.consumers == 1
        for job_id in odd_ids:
            # The job's log line is written right after the dead letter is (not before).
            async def logged(job_id=job_id):
                lines = await job_logs(pool, job_id)
                return [r for r in lines if "dead-lettered" in r["message"]]

            logs = await eventually(logged)
            assert len(logs) == 1 and logs[0]["level"] == "ERROR"
            assert "2 attempt(s)" in logs[0]["message"] and "MYSTERY" in logs[0]["message"]

        status = await asyncio.create_subprocess_exec(
            str(VENV_BIN / "antenna-jobs"),
            "status",
            env=cli_env,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(status.communicate(), 60)
        assert status.returncode == 0
        text = out.decode()
        assert f"bridge on queue '{queue}': connected" in text
        assert "dead-lettered 10" in text
    finally:
        bridge.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(bridge, 15)
        async with pool.connection() as conn:  # a status other tests' overviews can read
            await conn.execute(
                "UPDATE jobs_job SET status = 'FAILURE' WHERE id = ANY(%s)", (odd_ids,)
            )
    async with pool.connection() as conn:
        saved = {r.queue: r for r in await bridge_reports.latest(conn)}
    assert not saved[queue].connected and saved[queue].error == "stopped"
    await cancel_and_wait(JobActions(pool, temporal_client, settings), temporal_client, valid.id)
    letters = await asyncio.to_thread(list_dead_letters, BROKER_URL, queue)
    assert sorted((d.job_id, d.attempts) for d in letters) == [(i, 2) for i in sorted(odd_ids)]

    # The operator's commands: list them, replay one (back to the jobs queue, attempts reset).
    broker_env = {
        **cli_env,
        "ANTENNA_JOBS_ANTENNA_BROKER_URL": BROKER_URL,
        "ANTENNA_JOBS_ANTENNA_JOBS_QUEUE": queue,
    }

    async def cli(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(VENV_BIN / "antenna-jobs"), *args, env=broker_env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, args
        return out.decode()

    listed = json.loads(await cli("dead-letters", "list", "--json"))
    assert sorted(d["job_id"] for d in listed) == sorted(odd_ids)
    assert all("MYSTERY" in d["reason"] for d in listed)
    replayed = await cli("dead-letters", "replay", "--job", str(odd_ids[0]))
    assert "1 message(s) sent back" in replayed
    assert await asyncio.to_thread(queue_depth, queue) == 1
    assert await asyncio.to_thread(dead_letter_depth, queue) == 9


async def test_a_job_type_this_code_does_not_run_is_dead_lettered_not_started(
    pool, temporal_client, settings, job_workers, queue
):
    """A type Antenna added after this code: the row is readable (shown as it is), but no
    workflow here runs it, so the Run is dead-lettered with a line in the job's log, and no
    workflow is started (its start would fail every workflow task)."""
    job = await pending_job(pool, images=1)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs_job SET job_type_key = 'tracking_sync' WHERE id = %s", (job.id,)
        )
    actions = JobActions(pool, temporal_client, settings)
    hooks = Hooks()
    try:
        async with running_consumer(queue, actions.start_for_antenna, hooks=hooks, max_attempts=2):
            await send_run_job(queue, job.id)
            await eventually(lambda: hooks.dead)
        [letter] = hooks.dead
        assert letter.job_id == job.id and letter.attempts == 2
        assert "'tracking_sync' is not one antenna-jobs runs" in letter.reason
        assert await run_id(temporal_client, job.id) is None
        assert await status_of(pool, job.id) == JobState.PENDING
    finally:
        async with pool.connection() as conn:  # a type other tests' code paths know
            await conn.execute(
                "UPDATE jobs_job SET job_type_key = 'ml', status = 'FAILURE' WHERE id = %s",
                (job.id,),
            )
