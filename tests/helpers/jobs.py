"""Making jobs and their synthetic results: the one job factory (``make_job``), projects served
by the fake push-mode service (``seed_sync``), and the one synthetic-result builder
(``success_result``: what the ADC posts for one image) with what is built on it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from nats.js.errors import NotFoundError

from antenna_db import job_store, pipelines
from antenna_db.job_store import JobRecord
from antenna_db.pipelines import BATCH_SIZE_KEY
from antenna_db.seed import (
    CLASSIFIER_KEY,
    CLASSIFIER_LABELS,
    DETECTOR_KEY,
    SeedResult,
    add_service,
    seed,
)
from cli.fakes.service import results_for
from core.job_requests import NewMlJob
from core.schemas import (
    PipelineProcessingTask,
    PipelineRequest,
    PipelineResultsResponse,
    SourceImageRequest,
)
from core.states import JobState
from storage import job_runs
from storage.inbox import InboxEntry
from tests.helpers.db import NAMES

# The timestamp of the simulated ADC worker's results (the same on every redelivery).
T0 = datetime(2026, 6, 1, 22, 0, tzinfo=UTC)


class JobFixture(NamedTuple):
    """A made job, its seeded project and its images ``(id, url)`` in id order; unpacks as
    ``job, seeded, images = await make_job(...)``."""

    job: JobRecord
    seeded: SeedResult
    images: list[tuple[int, str]]

    @property
    def id(self) -> int:
        return self.job.id


def made_run_id(job_id: int) -> str:
    """The run id make_job gives a job it moves past CREATED without a workflow."""
    return f"{job_id:012x}" + "0" * 20


def made_consumer(job_id: int) -> str:
    """The consumer of the run make_job gives a job."""
    return NAMES.consumer(job_id)


async def make_job(
    pool: Any,
    *,
    images: int = 8,
    seeded: SeedResult | None = None,
    status: JobState = JobState.CREATED,
    **fields: Any,
) -> JobFixture:
    """An ML job on a new seeded project with ``images`` captures (or on ``seeded``'s), created
    as Antenna creates it (``fields``: NewMlJob's, e.g. ``dispatch_mode``, ``shuffle``,
    ``limit``). Another ``status`` moves it there straight, with a run of its own (no
    workflow involved: ``made_run_id``, ``made_consumer``)."""
    async with pool.connection() as conn:
        seeded = seeded or await seed(conn, images)
        new = NewMlJob(
            project_id=seeded.project_id,
            pipeline_slug=seeded.pipeline_slug,
            collection_id=seeded.collection_id,
            **fields,
        )
        job = await job_store.create_ml_job(conn, new)
        if status != JobState.CREATED:
            await conn.execute("UPDATE jobs_job SET status = %s WHERE id = %s", (status, job.id))
            await job_runs.take(conn, job.id, made_run_id(job.id), made_consumer(job.id))
            # As if the run had collected its images: the API serves its queue from then on.
            await conn.execute(
                "UPDATE job_runs SET collected_at = now() WHERE job_id = %s", (job.id,)
            )
            job = await job_store.get_job(conn, job.id)
        cur = await conn.execute(
            "SELECT s.id, rtrim(s.public_base_url, '/') || '/' || s.path AS url"
            " FROM main_sourceimagecollection_images c JOIN main_sourceimage s"
            " ON s.id = c.sourceimage_id WHERE c.sourceimagecollection_id = %s ORDER BY s.id",
            (seeded.collection_id,),
        )
        rows = [(r["id"], r["url"]) for r in await cur.fetchall()]
    return JobFixture(job=job, seeded=seeded, images=rows)


async def seed_sync(
    pool: Any,
    images: int,
    *,
    batch_size: int = 1,
    service_url: str | None = None,
    project_batch_size: int | None = None,
) -> SeedResult:
    """A project whose async flag is off, its pipeline's batch size, and a push service."""
    async with pool.connection() as conn:
        seeded = await seed(conn, images, async_workers=False)
        await pipelines.set_default_config(conn, seeded.pipeline_slug, BATCH_SIZE_KEY, batch_size)
        if project_batch_size is not None:
            await conn.execute(
                "UPDATE ml_projectpipelineconfig SET config = jsonb_build_object("
                "'request_source_image_batch_size', %s::int) WHERE project_id = %s",
                (project_batch_size, seeded.project_id),
            )
        if service_url is not None:
            await add_service(conn, seeded, service_url, "fake service")
    return seeded


def file_size(path: Path) -> int:
    """The size of a job's export file."""
    return path.stat().st_size


async def assert_queue_gone(resources: Any, redis_client: Any, job_id: int) -> None:
    """The job's stream and Redis keys were removed."""
    with pytest.raises(NotFoundError):
        await resources.js.stream_info(NAMES.stream(job_id))
    assert await redis_client.exists(*NAMES.redis_keys(job_id)) == 0


# --- synthetic results ------------------------------------------------------------------------


def detections_for(image_id: int) -> int:
    """The simulated ADC worker's detection count per image: 0, 1 or 2 (0 -> the aggregator
    writes a marker)."""
    return image_id % 3


def success_result(
    task: Mapping[str, Any] | PipelineProcessingTask,
    detections: int = 1,
    *,
    pipeline: str = "fake",
    at: datetime | None = None,
) -> dict[str, Any]:
    """What the ADC posts for one processed image (wire JSON): ``detections`` boxes, each with
    one classification (full scores and logits), timestamped ``at`` (default: now), plus the
    deprecated and unknown fields the API ignores."""
    if isinstance(task, PipelineProcessingTask):
        image_id, url = task.image_id, task.image_url
    else:
        image_id, url = task["image_id"], task["image_url"]
    when = (at or datetime.now(UTC)).isoformat()
    return {
        "pipeline": pipeline,
        "algorithms": {},
        "total_time": 0.25,
        "source_images": [{"id": image_id, "url": url}],
        "detections": [
            {
                "source_image_id": image_id,
                "bbox": {"x1": 10.0 * i, "y1": 5.0, "x2": 10.0 * i + 8, "y2": 20.0},
                "inference_time": 0.01,
                "algorithm": {"name": "Fake Detector", "key": DETECTOR_KEY},
                "timestamp": when,
                "crop_image_url": None,
                "classifications": [
                    {
                        "classification": CLASSIFIER_LABELS[0],
                        "labels": list(CLASSIFIER_LABELS),
                        "scores": [0.6, 0.1, 0.1, 0.1, 0.1],
                        "logits": [2.0, 0.1, 0.1, 0.1, 0.1],
                        "inference_time": 0.02,
                        "algorithm": {"name": "Fake Classifier", "key": CLASSIFIER_KEY},
                        "terminal": True,
                        "timestamp": when,
                    }
                ],
            }
            for i in range(detections)
        ],
        "config": {"ignored": True},
    }


def adc_result(task: PipelineProcessingTask, pipeline: str) -> PipelineResultsResponse:
    """The simulated ADC worker's result for a task: ``detections_for`` its image, at T0."""
    body = success_result(task, detections_for(int(task.image_id)), pipeline=pipeline, at=T0)
    return PipelineResultsResponse.model_validate(body)


def error_result(
    task: Mapping[str, Any] | None, message: str = "download failed"
) -> dict[str, Any]:
    return {"error": message, "image_id": task["image_id"] if task else None}


def entry(task: Mapping[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """One item of a result post's ``results``."""
    return {"reply_subject": task["reply_subject"], "result": result}


def inbox_entries(job: JobFixture) -> list[InboxEntry]:
    """A successful result for each of the job's images, as the API stores them (no reply
    subject: nothing to ack)."""
    out = []
    for image_id, url in job.images:
        task = PipelineProcessingTask(
            id=str(image_id), image_id=str(image_id), image_url=url, reply_subject=None
        )
        payload = adc_result(task, job.seeded.pipeline_slug).model_dump_json()
        out.append(InboxEntry(image_id=image_id, reply_subject="", is_error=False, payload=payload))
    return out


def expected_results(image_ids: list[int], seed_value: int = 0) -> tuple[int, int]:
    """(detections, classifications) the fake push-mode service answers for these images."""
    request = PipelineRequest(
        pipeline="any",
        source_images=[SourceImageRequest(id=str(i), url=f"u/{i}") for i in image_ids],
    )
    result = results_for(request, seed_value, 0.0)
    return len(result.detections), sum(len(d.classifications) for d in result.detections)
