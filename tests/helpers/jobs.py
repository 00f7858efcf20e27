"""Helpers of the SYNC_API and INTERNAL job tests: a project served by the fake push-mode service,
expected synthetic results, job rows, workflow handles and heartbeat details of running work."""

from __future__ import annotations

import json
from typing import Any

from temporalio.client import Client, WorkflowHandle

from antenna_db import job_store, pipelines
from antenna_db.job_store import JobRecord
from antenna_db.pipelines import BATCH_SIZE_KEY
from antenna_db.processing_services import add_push_service
from antenna_db.seed import SeedResult, seed
from cli.fakes.service import results_for
from core import naming
from core.job_requests import NewMlJob
from core.schemas import PipelineRequest, SourceImageRequest
from core.workflow_io import JobWorkflowResult
from tests.helpers.temporal import eventually


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
            await add_push_service(
                conn,
                name=f"fake service {seeded.pipeline_slug}",
                endpoint_url=service_url,
                project_id=seeded.project_id,
                pipeline_slugs=[seeded.pipeline_slug],
            )
    return seeded


async def create_ml(pool: Any, seeded: SeedResult, **kwargs: Any) -> JobRecord:
    """An ML job in image id order (no shuffle), so batches are predictable."""
    async with pool.connection() as conn:
        new = NewMlJob(
            project_id=seeded.project_id,
            pipeline_slug=seeded.pipeline_slug,
            collection_id=seeded.collection_id,
            shuffle=False,
            **kwargs,
        )
        return await job_store.create_ml_job(conn, new)


async def collection_image_ids(pool: Any, collection_id: int) -> list[int]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT sourceimage_id AS source_image_id FROM main_sourceimagecollection_images"
            " WHERE sourceimagecollection_id = %s"
            " ORDER BY source_image_id",
            (collection_id,),
        )
        return [r["source_image_id"] for r in await cur.fetchall()]


def expected_results(image_ids: list[int], seed_value: int = 0) -> tuple[int, int]:
    """(detections, classifications) the fake service answers for these images."""
    request = PipelineRequest(
        pipeline="any",
        source_images=[SourceImageRequest(id=str(i), url=f"u/{i}") for i in image_ids],
    )
    result = results_for(request, seed_value, 0.0)
    return len(result.detections), sum(len(d.classifications) for d in result.detections)


async def fetch(pool: Any, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return list(await cur.fetchall())


async def image_statuses(pool: Any, job_id: int) -> dict[int, tuple[str, str | None]]:
    rows = await fetch(
        pool, "SELECT source_image_id, status, error FROM job_images WHERE job_id = %s", job_id
    )
    return {r["source_image_id"]: (r["status"], r["error"]) for r in rows}


async def job_logs(pool: Any, job_id: int) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await job_store.latest_logs(conn, job_id, 500)


async def get_job(pool: Any, job_id: int) -> JobRecord:
    async with pool.connection() as conn:
        return await job_store.get_job(conn, job_id)


def handle(client: Client, job_id: int) -> WorkflowHandle[Any, JobWorkflowResult]:
    return client.get_workflow_handle(naming.workflow_id(job_id), result_type=JobWorkflowResult)


async def heartbeat_details(client: Client, job_id: int, activity: str) -> dict[str, Any] | None:
    """The last heartbeat details the server holds for the job's running ``activity``."""
    desc = await handle(client, job_id).describe()
    for pending in desc.raw_description.pending_activities:
        if pending.activity_type.name == activity and pending.heartbeat_details.payloads:
            value = json.loads(pending.heartbeat_details.payloads[0].data)
            return value if isinstance(value, dict) else None
    return None


async def wait_activity(client: Client, job_id: int, activity: str, within: float = 60.0) -> None:
    async def running() -> bool:
        desc = await handle(client, job_id).describe()
        return any(
            a.activity_type.name == activity for a in desc.raw_description.pending_activities
        )

    await eventually(running, within=within)
