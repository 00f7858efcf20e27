"""SYNC_API ML jobs end to end: a real Temporal dev server, Postgres, the worker (in-process or a
subprocess that is SIGKILLed) and the fake push-mode processing service over real HTTP."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError

from antenna_db import job_store
from antenna_db.seed import seed
from cli.fakes.service import FakeServiceConfig, FakeServiceStats, create_fake_service, serving
from core.settings import Settings
from core.states import DispatchMode, JobState
from job_control.actions import JobActions
from tests.helpers import eventually
from tests.helpers.chaos import DbHold
from tests.helpers.db import collection_image_ids, fetch, get_job, image_statuses, job_logs
from tests.helpers.jobs import expected_results, make_job, seed_sync
from tests.helpers.processes import worker_processes
from tests.helpers.settings import with_settings
from tests.helpers.temporal import (
    heartbeat_details,
    job_handle,
    run_to_end,
    run_to_failure,
    running_workers,
)


def with_sync(settings: Settings, **values: object) -> Settings:
    sync = {"retries": 1, "retry_backoff": 0.01, "read_timeout": 10, **values}
    return with_settings(settings, sync=sync)


async def detection_rows(pool, job_id: int) -> list[dict]:
    return await fetch(
        pool,
        "SELECT d.source_image_id, d.bbox_x1, count(*) AS n FROM job_detections d"
        " WHERE d.job_id = %s"
        " GROUP BY d.source_image_id, d.algorithm_id, d.bbox_x1, d.bbox_y1, d.bbox_x2, d.bbox_y2",
        job_id,
    )


async def classification_count(pool, job_id: int) -> int:
    rows = await fetch(
        pool,
        "SELECT count(*) AS n FROM job_classifications c WHERE c.job_id = %s",
        job_id,
    )
    return int(rows[0]["n"])


async def test_dispatch_mode_follows_the_project_flag_unless_set(pool):
    async with pool.connection() as conn:
        sync_project = await seed(conn, 1, async_workers=False)
        async_project = await seed(conn, 1, async_workers=True)
    assert (
        await make_job(pool, seeded=sync_project, shuffle=False)
    ).job.dispatch_mode == DispatchMode.SYNC_API
    assert (
        await make_job(pool, seeded=async_project, shuffle=False)
    ).job.dispatch_mode == DispatchMode.ASYNC_API
    explicit = (
        await make_job(
            pool, seeded=sync_project, shuffle=False, dispatch_mode=DispatchMode.ASYNC_API
        )
    ).job
    assert explicit.dispatch_mode == DispatchMode.ASYNC_API
    explicit = (
        await make_job(
            pool, seeded=async_project, shuffle=False, dispatch_mode=DispatchMode.SYNC_API
        )
    ).job
    assert explicit.dispatch_mode == DispatchMode.SYNC_API


async def test_sync_job_posts_batches_and_saves_every_answer(pool, temporal_client, settings):
    stats = FakeServiceStats()
    async with serving(create_fake_service(FakeServiceConfig(), stats)) as url:
        # The project's config (5) overrides the pipeline's default (4).
        seeded = await seed_sync(pool, 23, batch_size=4, project_batch_size=5, service_url=url)
        job = (await make_job(pool, seeded=seeded, shuffle=False)).job
        assert job.dispatch_mode == DispatchMode.SYNC_API
        result = await run_to_end(pool, temporal_client, settings, job.id)
        desc = await job_handle(temporal_client, job.id).describe()

    ids = await collection_image_ids(pool, seeded.collection_id)
    detections, classifications = expected_results(ids)
    assert desc.workflow_type == "SyncJobWorkflow"
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    assert result.status == JobState.SUCCESS
    assert (result.total, result.processed, result.failed) == (23, 23, 0)
    assert stats.requests == 5 and set(stats.batches.values()) == {1}
    assert sorted(len(k.split(",")) for k in stats.batches) == [3, 5, 5, 5, 5]

    rows = await detection_rows(pool, job.id)
    assert [r for r in rows if r["n"] != 1] == []
    assert [r for r in rows if r["bbox_x1"] is None] == []  # the fake always finds something
    assert len(rows) == detections
    assert await classification_count(pool, job.id) == classifications
    assert {s for s, _ in (await image_statuses(pool, job.id)).values()} == {"processed"}

    done = await get_job(pool, job.id)
    process, results = done.progress.stage("process"), done.progress.stage("results")
    assert done.status == JobState.SUCCESS and done.finished_at is not None
    assert done.progress.stage("collect").param("total_images") == 23
    assert (process.param("processed"), process.param("remaining")) == (23, 0)
    assert process.param("failed") == 0
    assert results.param("captures") == 23
    assert (results.param("detections"), results.param("classifications")) == (
        detections,
        classifications,
    )
    assert all(s.status == JobState.SUCCESS and s.progress == 1.0 for s in done.progress.stages)
    assert done.result is not None and done.result["detections"] == detections
    messages = [r["message"] for r in await job_logs(pool, job.id)]
    assert any(m.startswith("Processing service fake service") for m in messages)
    assert any(m.startswith("Sent 5 batches of up to 5 images") for m in messages)
    assert any(m.startswith("Job finished: SUCCESS") for m in messages)


async def test_failed_batches_fail_their_images_and_write_no_markers(
    pool, temporal_client, settings
):
    settings = with_sync(settings, retries=2, read_timeout=0.5)
    stats = FakeServiceStats()
    config = FakeServiceConfig()
    async with serving(create_fake_service(config, stats)) as url:
        seeded = await seed_sync(pool, 20, batch_size=2, service_url=url)
        ids = await collection_image_ids(pool, seeded.collection_id)
        config.fail_images = {str(ids[2])}  # batch 2: HTTP 500 every time
        config.invalid_images = {str(ids[6])}  # batch 4: an answer that is not a result
        config.hang_images = {str(ids[10])}  # batch 6: no answer within the read timeout
        job = (await make_job(pool, seeded=seeded, shuffle=False)).job
        result = await run_to_end(pool, temporal_client, settings, job.id)
        await eventually(lambda: _true(stats.in_flight == 0))

    failed = {ids[2], ids[3], ids[6], ids[7], ids[10], ids[11]}
    assert result.status == JobState.SUCCESS  # 6 of 20 failed: under the threshold
    assert (result.processed, result.failed) == (14, 6)
    assert stats.batches[f"{ids[2]},{ids[3]}"] == 3  # 1 try + 2 retries
    assert stats.batches[f"{ids[6]},{ids[7]}"] == 1  # an invalid answer is not retried
    assert stats.batches[f"{ids[10]},{ids[11]}"] == 3
    assert stats.disconnected == 3  # each timed-out request was abandoned by the client

    statuses = await image_statuses(pool, job.id)
    assert {i for i, (s, _) in statuses.items() if s == "failed"} == failed
    assert "HTTP 500" in (statuses[ids[3]][1] or "")
    assert "(after 3 attempts)" in (statuses[ids[3]][1] or "")
    assert (statuses[ids[7]][1] or "").startswith("invalid response: ")
    assert (statuses[ids[11]][1] or "").startswith("ReadTimeout")
    # No "processed, nothing found" marker (nor anything else) for a failed image.
    assert {r["source_image_id"] for r in await detection_rows(pool, job.id)} == set(ids) - failed
    processed = [i for i in ids if i not in failed]
    assert len(await detection_rows(pool, job.id)) == expected_results(processed)[0]

    done = await get_job(pool, job.id)
    assert done.progress.stage("process").param("failed") == 6
    assert done.progress.stage("results").param("captures") == 14
    errors = [r["message"] for r in await job_logs(pool, job.id) if r["level"] == "ERROR"]
    assert len([m for m in errors if m.startswith("Batch of 2 images failed")]) == 3


async def _true(value: bool) -> bool:
    return value


async def test_mostly_failed_sync_job_ends_failure(pool, temporal_client, settings):
    settings = with_sync(settings, retries=0)
    async with serving(create_fake_service(FakeServiceConfig(error_rate=1.0))) as url:
        seeded = await seed_sync(pool, 6, batch_size=2, service_url=url)
        job = (await make_job(pool, seeded=seeded, shuffle=False)).job
        async with running_workers(temporal_client, settings):
            await JobActions(pool, temporal_client, settings).run(job.id)
            with pytest.raises(WorkflowFailureError) as raised:
                await job_handle(temporal_client, job.id).result()
    assert isinstance(raised.value.cause, ApplicationError)
    assert raised.value.cause.type == "JobFailed"
    done = await get_job(pool, job.id)
    assert done.status == JobState.FAILURE
    assert done.progress.stage("process").status == JobState.FAILURE
    assert done.progress.stage("process").param("failed") == 6
    assert await detection_rows(pool, job.id) == []


@pytest.mark.parametrize("case", ["none registered", "not ready"])
async def test_no_live_service_fails_the_job_with_the_reason(case, pool, temporal_client, settings):
    config = FakeServiceConfig(ready=False)
    async with serving(create_fake_service(config)) as url:
        seeded = await seed_sync(pool, 4, service_url=None if case == "none registered" else url)
        job = (await make_job(pool, seeded=seeded, shuffle=False)).job
        failure = await run_to_failure(pool, temporal_client, settings, job.id)
    assert any("no live processing service" in m for m in failure), failure
    if case == "not ready":
        assert any("/readyz answered 503" in m for m in failure), failure
        rows = await fetch(
            pool, "SELECT last_seen_live FROM ml_processingservice WHERE endpoint_url = %s", url
        )
        assert rows == [{"last_seen_live": False}]
    # Nothing was sent, nothing failed: the images stay as they were.
    assert {s for s, _ in (await image_statuses(pool, job.id)).values()} == {"pending"}


@pytest.mark.parametrize("how", ["api", "signal"])
async def test_cancel_interrupts_the_request_in_flight(how, pool, temporal_client, settings):
    stats = FakeServiceStats()
    config = FakeServiceConfig()
    async with serving(create_fake_service(config, stats)) as url:
        seeded = await seed_sync(pool, 10, batch_size=1, service_url=url)
        ids = await collection_image_ids(pool, seeded.collection_id)
        config.hang_images = {str(ids[4])}
        job = (await make_job(pool, seeded=seeded, shuffle=False)).job
        async with running_workers(temporal_client, settings):
            actions = JobActions(pool, temporal_client, settings)
            await actions.run(job.id)
            await eventually(lambda: _true(stats.in_flight == 1 and stats.answered == 4))
            if how == "api":
                await actions.cancel(job.id, reason="test cancel")
            else:
                await job_handle(temporal_client, job.id).signal("cancel", "test signal")
            with pytest.raises(WorkflowFailureError) as raised:
                await job_handle(temporal_client, job.id).result()
            desc = await job_handle(temporal_client, job.id).describe()
        await eventually(lambda: _true(stats.disconnected == 1))
    assert isinstance(raised.value.cause, CancelledError)
    assert desc.status == WorkflowExecutionStatus.CANCELED
    assert stats.requests == 5  # nothing was sent after the cancel
    done = await get_job(pool, job.id)
    assert done.status == JobState.REVOKED and done.finished_at is not None
    statuses = await image_statuses(pool, job.id)
    assert [statuses[i][0] for i in ids] == ["processed"] * 4 + ["pending"] * 6
    assert {r["source_image_id"] for r in await detection_rows(pool, job.id)} == set(ids[:4])


async def test_cancel_in_the_job_row_stops_between_batches(pool, temporal_client, settings):
    stats = FakeServiceStats()
    async with serving(create_fake_service(FakeServiceConfig(latency=0.1), stats)) as url:
        seeded = await seed_sync(pool, 200, batch_size=1, service_url=url)
        job = (await make_job(pool, seeded=seeded, shuffle=False)).job
        async with running_workers(temporal_client, settings):
            await JobActions(pool, temporal_client, settings).run(job.id)
            await eventually(lambda: _true(stats.answered >= 3))
            async with pool.connection() as conn:  # e.g. cancelled by the Antenna UI
                await job_store.transition(conn, job.id, JobState.CANCELING, [JobState.STARTED])
            with pytest.raises(WorkflowFailureError):
                await job_handle(temporal_client, job.id).result()
    done = await get_job(pool, job.id)
    assert done.status == JobState.REVOKED
    assert stats.requests < 100
    statuses = [s for s, _ in (await image_statuses(pool, job.id)).values()]
    assert "failed" not in statuses and "pending" in statuses


@pytest.mark.chaos
async def test_worker_killed_mid_job_resumes_at_the_next_unsaved_batch(
    pool, temporal_client, settings, tmp_path
):
    stats = FakeServiceStats()
    async with serving(create_fake_service(FakeServiceConfig(), stats)) as url:
        seeded = await seed_sync(pool, 16, batch_size=2, service_url=url)
        ids = await collection_image_ids(pool, seeded.collection_id)
        job = (await make_job(pool, seeded=seeded, shuffle=False)).job
        # Batch 4 (ordinals 7-8) waits inside its transaction, after batches 1-3 committed.
        hold = DbHold(
            settings,
            "job_images",
            "UPDATE",
            f"NEW.job_id = {job.id} AND NEW.source_image_id = {ids[6]}"
            " AND OLD.status = 'pending' AND NEW.status <> 'pending'",
        )
        with worker_processes(settings, tmp_path) as workers:
            async with hold:
                first = workers.start()
                await JobActions(pool, temporal_client, settings).run(job.id)
                await hold.wait_blocked()

                async def checkpointed() -> bool:
                    details = await heartbeat_details(
                        temporal_client, job.id, "process_sync_batches"
                    )
                    return bool(details) and details["last_ordinal"] == 6

                await eventually(checkpointed, within=30)
                first.kill()
                await hold.terminate_waiters()
            workers.start()
            result = await job_handle(temporal_client, job.id).result()

    assert result.status == JobState.SUCCESS and result.processed == 16
    assert stats.batches[f"{ids[6]},{ids[7]}"] == 2  # the unsaved batch, sent again
    assert all(stats.batches[f"{ids[n]},{ids[n + 1]}"] == 1 for n in (0, 2, 4, 8, 10, 12, 14))
    rows = await detection_rows(pool, job.id)
    assert [r for r in rows if r["n"] != 1] == []  # nothing saved twice
    detections, classifications = expected_results(ids)
    assert len(rows) == detections
    assert await classification_count(pool, job.id) == classifications
    done = await get_job(pool, job.id)
    assert done.progress.stage("results").param("detections") == detections
    assert done.progress.stage("process").param("processed") == 16
    messages = [r["message"] for r in await job_logs(pool, job.id)]
    assert any("resumed after ordinal 6" in m for m in messages), messages


async def test_history_does_not_grow_with_images_or_batches(pool, temporal_client, settings):
    """O(1) history: one activity per phase, whatever the number of batches."""
    lengths = []
    async with (
        serving(create_fake_service(FakeServiceConfig())) as url,
        running_workers(temporal_client, settings),
    ):
        for images in (3, 60):
            seeded = await seed_sync(pool, images, batch_size=1, service_url=url)
            job = (await make_job(pool, seeded=seeded, shuffle=False)).job
            await JobActions(pool, temporal_client, settings).run(job.id)
            await job_handle(temporal_client, job.id).result()
            events = [e async for e in job_handle(temporal_client, job.id).fetch_history_events()]
            lengths.append(len(events))
    assert lengths[0] == lengths[1], lengths
