"""A backlog in the inbox is drained by several batches at once (``aggregate_lanes``): each
claims rows the others skip, so every image is saved exactly once, duplicated results
included, and the counts come out exact."""

from __future__ import annotations

from core.states import JobState
from job_control.actions import JobActions
from tests.helpers.db import fetch_one, image_ids
from tests.helpers.jobs import detections_for, make_job
from tests.helpers.settings import with_settings
from tests.helpers.temporal import SimulatedAdcWorker, job_handle, running_workers, simulated_worker

IMAGES = 400


async def test_lanes_save_every_image_once(pool, temporal_client, settings, nats_client):
    settings = with_settings(settings, jobs={"aggregate_batch_size": 10, "aggregate_lanes": 3})
    job, seeded, _ = await make_job(pool, images=IMAGES)
    fails = lambda image: image % 7 == 0  # noqa: E731
    async with running_workers(temporal_client, settings):
        # Every result posted twice, 100 at a time: the inbox always holds many batches.
        adc = SimulatedAdcWorker(
            nats_client, pool, job.id, seeded.pipeline_slug, fails=fails, duplicates=True
        )
        async with simulated_worker(adc):
            await JobActions(pool, temporal_client, settings).run(job.id)
            result = await job_handle(temporal_client, job.id).result()

    ids = await image_ids(pool, job.id)
    ok = [i for i in ids if not fails(i)]
    assert result.status == JobState.SUCCESS
    assert (result.processed, result.failed) == (len(ok), IMAGES - len(ok))
    want = sum(detections_for(i) for i in ok)
    row = await fetch_one(
        pool,
        "SELECT count(*) FILTER (WHERE bbox_x1 IS NOT NULL) AS real,"
        " count(DISTINCT (source_image_id, bbox_x1, bbox_y1)) FILTER (WHERE bbox_x1 IS NOT NULL)"
        " AS distinct_boxes FROM job_detections WHERE job_id = %s",
        job.id,
    )
    assert row["real"] == row["distinct_boxes"] == want
    row = await fetch_one(
        pool, "SELECT count(*) AS n FROM job_classifications WHERE job_id = %s", job.id
    )
    assert row["n"] == want
    assert await fetch_one(pool, "SELECT 1 FROM result_inbox WHERE job_id = %s", job.id) is None
