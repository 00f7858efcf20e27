"""Start and retry semantics: one run per start, no run for a final job, and a retry that
removes what the previous run left and queues only what is not yet processed (Antenna #1283).
"""

from __future__ import annotations

import asyncio

import pytest
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError
from typer.testing import CliRunner

from antenna_db import job_store
from cli.main import app as cli_app
from core.states import JobState
from storage import inbox
from storage.inbox import InboxEntry
from tests.helpers import eventually
from tests.helpers.api import Api
from tests.helpers.chaos import RecordingAdc, wait_final
from tests.helpers.db import NAMES, job_counts
from tests.helpers.jobs import detections_for, make_job
from tests.helpers.processes import cli_env
from tests.helpers.temporal import running_workers, simulated_worker, wait_activity


async def cli(settings, *args: str):
    return await asyncio.to_thread(CliRunner().invoke, cli_app, list(args), env=cli_env(settings))


async def stream_messages(js, job_id: int) -> int | None:
    try:
        return (await js.stream_info(NAMES.stream(job_id))).state.messages
    except NotFoundError:
        return None


async def test_starting_a_running_job_keeps_its_one_run(
    api: Api, pool, temporal_client, settings, nats_client
):
    job, _, _ = await make_job(pool, images=50)
    js = nats_client.jetstream()
    async with running_workers(temporal_client, settings):
        answers = await asyncio.gather(
            *(api.client.post(f"/jobs/{job.id}/run/") for _ in range(5)),
            cli(settings, "job", "run", str(job.id)),
        )
        assert [r.status_code for r in answers[:5]] == [200] * 5
        assert answers[5].exit_code == 0, answers[5].output
        handle = temporal_client.get_workflow_handle(NAMES.workflow_id(job.id))
        await wait_activity(handle, "aggregate_results")
        await eventually(lambda: _equals(stream_messages(js, job.id), 50))
        assert (await api.client.post(f"/jobs/{job.id}/run/")).status_code == 200
        runs = [w async for w in temporal_client.list_workflows(f"WorkflowId = '{handle.id}'")]
        assert len({w.run_id for w in runs}) <= 1  # visibility may lag; never two runs
        assert await stream_messages(js, job.id) == 50  # one set of task messages
        await handle.cancel()
        await wait_final(pool, job.id)


async def _equals(value, expected) -> bool:
    return await value == expected


@pytest.mark.parametrize("status", [JobState.SUCCESS, JobState.FAILURE, JobState.REVOKED])
async def test_starting_a_final_job_is_refused_with_its_status(
    status, api: Api, pool, temporal_client, settings
):
    job, _, _ = await make_job(pool, images=3)
    async with pool.connection() as conn:
        await job_store.transition(conn, job.id, status, [JobState.CREATED], finished=True)
    response = await api.client.post(f"/jobs/{job.id}/run/")
    assert response.status_code == 409
    assert response.json()["status"] == status
    refused = await cli(settings, "job", "run", str(job.id))
    assert refused.exit_code == 1
    assert f"job {job.id} is {status}: cannot run" in refused.stderr
    handle = temporal_client.get_workflow_handle(NAMES.workflow_id(job.id))
    with pytest.raises(Exception, match="not found"):
        await handle.describe()


@pytest.mark.parametrize("first_run_ends", ["terminated", "cancelled"])
async def test_retry_queues_only_unprocessed_images_once(
    first_run_ends, api: Api, pool, temporal_client, settings, nats_client, redis_client
):
    total, first = 100, 40
    job, seeded, _ = await make_job(pool, images=total)
    js = nats_client.jetstream()
    handle = temporal_client.get_workflow_handle(NAMES.workflow_id(job.id))
    async with running_workers(temporal_client, settings):
        adc1 = RecordingAdc(nats_client, pool, job.id, seeded.pipeline_slug, budget=first)
        async with simulated_worker(adc1):
            await api.client.post(f"/jobs/{job.id}/run/")

            async def processed_first():
                return (await job_counts(pool, job.id))["processed"] == first

            await eventually(processed_first, within=60)
            old_run = (await handle.describe()).run_id
            if first_run_ends == "terminated":
                # Terminated: the stream, keys and a stray result stay behind (as after a crash
                # in Antenna), and something marks the job FAILURE without cleaning up.
                await handle.terminate(reason="test")
                entry = InboxEntry(image_id=None, reply_subject="old", is_error=True, payload="{}")
                async with pool.connection() as conn:
                    await inbox.store(conn, job.id, [entry])
                    await job_store.transition(
                        conn, job.id, JobState.FAILURE, [JobState.STARTED], finished=True
                    )
                assert await stream_messages(js, job.id) == total
            else:
                assert (await api.client.post(f"/jobs/{job.id}/cancel/")).status_code == 200
                assert await wait_final(pool, job.id) == JobState.REVOKED

        first_done = await _processed(pool, job.id)
        all_images = await _processed(pool, job.id, status=None)
        assert len(first_done) == first
        response = await api.client.post(f"/jobs/{job.id}/retry/")
        # Antenna's retry: RETRY and at once its enqueue's PENDING (the new run then STARTED).
        assert response.status_code == 200
        assert response.json()["status"] in {JobState.PENDING, JobState.STARTED}
        # The old stream (100 messages) is gone; the new one holds only the unprocessed images.
        await eventually(lambda: _equals(stream_messages(js, job.id), total - first))
        adc2 = RecordingAdc(nats_client, pool, job.id, seeded.pipeline_slug)
        async with simulated_worker(adc2):
            assert await wait_final(pool, job.id) == JobState.SUCCESS
            # The row is final before the run's clean-up (stream, Redis keys) has run.
            await handle.result()
        new_run = (await handle.describe()).run_id
        assert new_run != old_run

    # The retry queued exactly the images the first run had not processed, once each.
    assert set(adc2.deliveries) == all_images - first_done
    assert adc2.duplicate_messages() == {}
    async with pool.connection() as conn:
        done = await job_store.get_job(conn, job.id)
        # Over the job's capture set: the image set (job_images) holds only the last run's.
        cur = await conn.execute(
            "SELECT d.source_image_id, count(*) FILTER (WHERE d.bbox IS NOT NULL) AS real,"
            " count(*) AS n FROM main_detection d JOIN main_sourceimagecollection_images ci"
            " ON ci.sourceimage_id = d.source_image_id WHERE ci.sourceimagecollection_id = %s"
            " GROUP BY d.source_image_id",
            (done.collection_id,),
        )
        per_image = {r["source_image_id"]: r for r in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT count(*) AS n FROM result_inbox WHERE job_id = %s", (job.id,)
        )
        assert (await cur.fetchone())["n"] == 0
    assert len(per_image) == total  # every image has its results, from one run or the other
    for image, row in per_image.items():
        assert row["real"] == detections_for(image)
        assert row["n"] == max(1, detections_for(image))  # no duplicate, marker when none
    assert done.progress.stage("collect").param("total_images") == total - first
    assert done.progress.stage("process").param("processed") == total - first
    assert await redis_client.exists(*NAMES.redis_keys(job.id)) == 0
    assert await stream_messages(js, job.id) is None


async def _processed(pool, job_id: int, status: str | None = "processed") -> set[int]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT source_image_id FROM job_images WHERE job_id = %s"
            " AND (%s::text IS NULL OR status = %s)",
            (job_id, status, status),
        )
        return {r["source_image_id"] for r in await cur.fetchall()}


async def test_retry_removes_a_leftover_stream_with_duplicates(
    api: Api, pool, temporal_client, settings, nats_client
):
    """Antenna #1283: a restart on top of an old stream republished every task. Here a stale
    stream full of old messages is deleted before the new run publishes."""
    job, seeded, _ = await make_job(pool, images=30)
    js = nats_client.jetstream()
    await js.add_stream(StreamConfig(name=NAMES.stream(job.id), subjects=[NAMES.subject(job.id)]))
    for _ in range(45):
        await js.publish(NAMES.subject(job.id), b'{"id": "0", "image_id": "0", "image_url": ""}')
    async with pool.connection() as conn:
        await job_store.transition(
            conn, job.id, JobState.FAILURE, [JobState.CREATED], finished=True
        )
    adc = RecordingAdc(nats_client, pool, job.id, seeded.pipeline_slug)
    async with running_workers(temporal_client, settings), simulated_worker(adc):
        assert (await api.client.post(f"/jobs/{job.id}/retry/")).status_code == 200
        assert await wait_final(pool, job.id) == JobState.SUCCESS
    assert len(adc.deliveries) == 30 and 0 not in adc.deliveries
    assert adc.duplicate_messages() == {}
