"""The reconcile workflow (Antenna's jobs_health_check, on a Temporal Schedule).

``temporal workflow terminate`` skips workflow code: the job row stays STARTED or CANCELING and
its stream, consumer, Redis keys and inbox rows stay behind. Reconcile finds such jobs by asking
Temporal, sets FAILURE or REVOKED with the reason in the log, and removes the leftovers; it
leaves alone jobs that run, jobs that were touched since (a retry about to start), CREATED jobs,
and streams that may belong to someone else; a PENDING job with no workflow (its run_job message
never reached the bridge) is started, not failed.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError
from temporalio.client import ScheduleHandle, WorkflowExecutionStatus
from temporalio.testing import ActivityEnvironment

from activities.async_api.task_queue import TaskQueueActivities
from activities.reconcile.models import ReconcileInput
from activities.reconcile.repair import ReconcileActivities
from antenna_db import job_store
from core.states import JobState
from job_control.actions import JobActions
from storage import inbox
from storage.inbox import InboxEntry
from tests.helpers import eventually
from tests.helpers.db import NAMES
from tests.helpers.jobs import make_job
from tests.helpers.processes import OwnedNats, owned, worker_processes
from tests.helpers.settings import SHORT_HEARTBEATS, with_settings
from tests.helpers.temporal import run_reconcile, running_workers, wait_activity
from worker.resources import Resources
from worker.schedules import ensure_reconcile_schedule


@pytest.fixture
def settings(settings):
    return with_settings(
        settings,
        jobs=SHORT_HEARTBEATS,
        # Streams of jobs unknown to this session belong to other sessions: never touched.
        reconcile={"grace": timedelta(seconds=2), "zombie_age": timedelta(days=3650)},
    )


async def stream_exists(js, job_id: int) -> bool:
    try:
        await js.stream_info(NAMES.stream(job_id))
        return True
    except NotFoundError:
        return False


async def inbox_row(pool, job_id: int) -> None:
    entry = InboxEntry(image_id=None, reply_subject="late", is_error=True, payload='{"error": "x"}')
    async with pool.connection() as conn:
        await inbox.store(conn, job_id, [entry])


async def leftovers(resources, redis_client, pool, job_id: int) -> list[str]:
    left = []
    if await stream_exists(resources.js, job_id):
        left.append("stream")
    if await redis_client.exists(*NAMES.redis_keys(job_id)):
        left.append("keys")
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT 1 FROM result_inbox WHERE job_id = %s", (job_id,))
        if await cur.fetchone():
            left.append("inbox")
    return left


async def started_then_terminated(pool, client, settings, actions, resources):
    """A job in aggregation whose workflow was terminated: row STARTED, queue left behind."""
    job, _, _ = await make_job(pool, images=30)
    await actions.run(job.id)
    handle = client.get_workflow_handle(NAMES.workflow_id(job.id))
    await wait_activity(handle, "aggregate_results")

    async def published():
        return await stream_exists(resources.js, job.id)

    await eventually(published)
    await handle.terminate(reason="operator terminated it")
    return job


async def test_terminated_jobs_are_repaired_and_cleaned(
    pool, temporal_client, settings, redis_client
):
    actions = JobActions(pool, temporal_client, settings)
    async with running_workers(temporal_client, settings) as resources:
        failed = await started_then_terminated(pool, temporal_client, settings, actions, resources)
        canceling = await started_then_terminated(
            pool, temporal_client, settings, actions, resources
        )
        touched = await started_then_terminated(pool, temporal_client, settings, actions, resources)
        running, _, _ = await make_job(pool, images=10)
        await actions.run(running.id)
        await wait_activity(
            temporal_client.get_workflow_handle(NAMES.workflow_id(running.id)),
            "aggregate_results",
        )
        never_started, _, _ = await make_job(
            pool, images=5
        )  # PENDING, but its start never reached Temporal
        created, _, _ = await make_job(pool, images=5)
        async with pool.connection() as conn:
            await job_store.transition(conn, canceling.id, JobState.CANCELING, [JobState.STARTED])
            await conn.execute(
                "UPDATE jobs_job SET status = 'PENDING', updated_at = now() - interval '1 hour'"
                " WHERE id = %s",
                (never_started.id,),
            )
        for job in (failed, canceling):
            await inbox_row(pool, job.id)  # a result the API stored after the termination
        # The terminated runs' activities notice at their next heartbeat, then nothing writes.
        await asyncio.sleep(settings.reconcile.grace.total_seconds() + 1.5)
        async with pool.connection() as conn:
            # A retry's status write after its previous run closed: its new run is starting.
            await job_store.transition(conn, touched.id, JobState.RETRY, [JobState.STARTED])

        report = await run_reconcile(temporal_client, settings)

        repaired = {r.job_id: r for r in report.jobs.repaired}
        assert repaired[failed.id].to_status == JobState.FAILURE
        assert "TERMINATED" in repaired[failed.id].reason
        assert repaired[canceling.id].to_status == JobState.REVOKED
        # PENDING with no workflow: its run_job message may still be waiting; started, not failed.
        assert never_started.id in report.jobs.started  # (and other tests' PENDING rows)
        assert not {touched.id, running.id, created.id, never_started.id} & set(repaired)
        assert report.jobs.running >= 1 and report.jobs.recent >= 1
        for job in (failed, canceling):
            assert await leftovers(resources, redis_client, pool, job.id) == []
        assert await stream_exists(resources.js, running.id)
        assert await stream_exists(resources.js, touched.id)

        async with pool.connection() as conn:
            for job, status in (
                (failed, JobState.FAILURE),
                (canceling, JobState.REVOKED),
                (touched, JobState.RETRY),
                (running, JobState.STARTED),
                (created, JobState.CREATED),
            ):
                row = await job_store.get_job(conn, job.id)
                assert row.status == status, (job.id, row.status, status)
                if status in {JobState.FAILURE, JobState.REVOKED}:
                    assert row.finished_at is not None
                    logs = [r["message"] for r in await job_store.latest_logs(conn, job.id, 5)]
                    assert any(m.startswith("Reconciled: its workflow") for m in logs), logs
        started = temporal_client.get_workflow_handle(NAMES.workflow_id(never_started.id))
        assert (await started.describe()).status == WorkflowExecutionStatus.RUNNING
        async with pool.connection() as conn:
            logs = [r["message"] for r in await job_store.latest_logs(conn, never_started.id, 5)]
        assert any(m.startswith("Run started by reconcile") for m in logs), logs
        for job in (running, never_started):
            await temporal_client.get_workflow_handle(NAMES.workflow_id(job.id)).terminate("end")


async def test_a_pending_job_that_can_never_start_is_failed_with_the_reason(
    pool, temporal_client, settings
):
    """Started by reconcile, not failed, is for a job that can run; a row that cannot be read
    (here a dispatch mode this code does not know) would fail every pass: FAILURE, once."""
    job, _, _ = await make_job(pool, images=1)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs_job SET status = 'PENDING', dispatch_mode = 'carrier_pigeon',"
            " updated_at = now() - interval '1 hour' WHERE id = %s",
            (job.id,),
        )
    try:
        async with running_workers(temporal_client, settings):
            report = await run_reconcile(temporal_client, settings)
    finally:
        async with pool.connection() as conn:  # readable again for other tests' listings
            await conn.execute(
                "UPDATE jobs_job SET dispatch_mode = 'async_api' WHERE id = %s", (job.id,)
            )
    repaired = {r.job_id: r for r in report.jobs.repaired}
    assert job.id not in report.jobs.started
    assert repaired[job.id].to_status == JobState.FAILURE
    assert "could not be started" in repaired[job.id].reason
    assert "carrier_pigeon" in repaired[job.id].reason
    async with pool.connection() as conn:
        assert (await job_store.get_job(conn, job.id)).status == JobState.FAILURE


async def test_leftovers_of_final_jobs_are_removed(pool, settings, redis_client, nats_client):
    """Streams, keys and inbox rows of final jobs go; running jobs' and strangers' stay."""
    js = nats_client.jetstream()
    with_stream, _, _ = await make_job(pool, images=3)
    keys_only, _, _ = await make_job(pool, images=3)
    running, _, _ = await make_job(pool, images=3)
    stranger = with_stream.id + 10_000_000  # no such job in this session's schema
    for job_id in (with_stream.id, running.id, stranger):
        config = StreamConfig(name=NAMES.stream(job_id), subjects=[NAMES.subject(job_id)])
        await js.add_stream(config)
    for job_id in (with_stream.id, keys_only.id, running.id, stranger):
        await redis_client.set(NAMES.total_key(job_id), 3, ex=600)
    await inbox_row(pool, with_stream.id)
    await inbox_row(pool, keys_only.id)
    async with pool.connection() as conn:
        for job in (with_stream, keys_only):
            await job_store.transition(
                conn, job.id, JobState.SUCCESS, [JobState.CREATED], finished=True
            )
        await job_store.transition(conn, running.id, JobState.STARTED, [JobState.CREATED])
    resources = await Resources.open(settings, run_migrations=False)
    try:
        queue = TaskQueueActivities(
            resources.nc, resources.js, resources.redis, resources.pool, settings
        )
        acts = ReconcileActivities(
            resources.pool, None, queue, resources.js, resources.redis, settings
        )
        report = await ActivityEnvironment().run(acts.remove_leftovers, ReconcileInput())
        assert NAMES.stream(with_stream.id) in report.streams_removed
        assert keys_only.id in report.redis_jobs_removed and report.inbox_rows_removed >= 1
        for job in (with_stream, keys_only):
            assert await leftovers(resources, redis_client, pool, job.id) == []
    finally:
        await resources.close()
    for job_id in (running.id, stranger):
        assert await stream_exists(js, job_id)
        assert await redis_client.exists(NAMES.total_key(job_id)) == 1
        await js.delete_stream(NAMES.stream(job_id))
        await redis_client.delete(NAMES.total_key(job_id))


async def test_zombie_streams_of_missing_jobs_are_removed_once_old(pool, settings, tmp_path):
    """On a NATS server of this test's own: a stream whose job does not exist is a zombie."""
    async with owned(OwnedNats("nats", tmp_path / "nats")) as server:
        for age, removed in ((timedelta(days=1), False), (timedelta(0), True)):
            local = with_settings(settings, nats={"url": server.url}, reconcile={"zombie_age": age})
            resources = await Resources.open(local, run_migrations=False)
            try:
                await resources.js.add_stream(
                    StreamConfig(name="job_999999999999999", subjects=["job.999999999999999.tasks"])
                )
                queue = TaskQueueActivities(
                    resources.nc, resources.js, resources.redis, resources.pool, local
                )
                acts = ReconcileActivities(
                    resources.pool, None, queue, resources.js, resources.redis, local
                )
                report = await ActivityEnvironment().run(acts.remove_leftovers, ReconcileInput())
                assert ("job_999999999999999" in report.streams_removed) is removed
                assert report.streams_checked == 1
            finally:
                await resources.close()


async def test_a_prefixed_deployment_reconciles_only_its_own_names(
    pool, settings, tmp_path, redis_client
):
    """Two deployments share a NATS and a Redis: the prefixed one's reconcile removes its own
    zombie stream and keys, never the other's (Antenna's names, no prefix)."""
    async with owned(OwnedNats("nats", tmp_path / "nats")) as server:
        prefix = f"p{uuid.uuid4().hex[:6]}-"
        local = with_settings(
            settings,
            nats={"url": server.url},
            reconcile={"zombie_age": timedelta(0)},
            jobs={"name_prefix": prefix},
        )
        ours, theirs = local.jobs.names, NAMES
        missing = 999_999_999_999_998
        resources = await Resources.open(local, run_migrations=False)
        try:
            for names in (ours, theirs):
                await resources.js.add_stream(
                    StreamConfig(name=names.stream(missing), subjects=[names.subject(missing)])
                )
            assert ours.stream(missing) == f"{prefix}job_{missing}"
            assert ours.job_id_from_stream(theirs.stream(missing)) is None
            queue = TaskQueueActivities(
                resources.nc, resources.js, resources.redis, resources.pool, local
            )
            acts = ReconcileActivities(
                resources.pool, None, queue, resources.js, resources.redis, local
            )
            report = await ActivityEnvironment().run(acts.remove_leftovers, ReconcileInput())
            assert report.streams_removed == [ours.stream(missing)]
            assert report.streams_checked == 1
            await resources.js.stream_info(theirs.stream(missing))  # still there
            assert ours.redis_key_pattern() == f"{prefix}job:*"
            assert ours.job_id_from_redis_key(theirs.total_key(missing)) is None
        finally:
            await resources.close()


async def test_the_worker_creates_the_schedule_that_runs_reconcile(
    pool, temporal_client, settings, tmp_path
):
    schedule_id = settings.jobs.names.reconcile_schedule_id(settings.jobs.task_queue)
    handle: ScheduleHandle = temporal_client.get_schedule_handle(schedule_id)
    try:
        # `antenna-jobs worker` creates it at start when it is missing...
        with worker_processes(settings, tmp_path, schedule=True) as workers:
            workers.start()

            async def created():
                try:
                    return await handle.describe()
                except Exception:
                    return None

            description = await eventually(created, within=60)
            workers.stop_all()
        assert [i.every for i in description.schedule.spec.intervals] == [timedelta(minutes=5)]
        # ...leaves it alone when it is there, and follows a changed interval.
        assert await ensure_reconcile_schedule(temporal_client, settings) == schedule_id
        quick = with_settings(settings, reconcile={"interval": timedelta(hours=1)})
        await ensure_reconcile_schedule(temporal_client, quick)
        description = await handle.describe()
        assert [i.every for i in description.schedule.spec.intervals] == [timedelta(hours=1)]

        # Triggered, it runs the reconcile workflow on the job task queue, which repairs a job.
        actions = JobActions(pool, temporal_client, settings)
        async with running_workers(temporal_client, settings) as resources:
            job = await started_then_terminated(pool, temporal_client, settings, actions, resources)
            await asyncio.sleep(settings.reconcile.grace.total_seconds() + 1.5)
            await handle.trigger()

            async def repaired():
                async with pool.connection() as conn:
                    return await job_store.get_status(conn, job.id) == JobState.FAILURE

            await eventually(repaired, within=60)
    finally:
        await handle.delete()
