"""What the Temporal Web UI and ``temporal workflow list`` show of a job: search attributes for
the project, pipeline and job type, a summary and details set at start, and current details that
follow the phases. Against the session's real dev server."""

from __future__ import annotations

import asyncio
import json

from temporalio.api.sdk.v1 import WorkflowMetadata

from core.states import JobState
from job_control.actions import JobActions
from tests.helpers import eventually
from tests.helpers.db import NAMES
from tests.helpers.jobs import make_job
from tests.helpers.temporal import TEMPORAL_CLI, job_handle, running_workers


async def current_details(handle) -> str:
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(metadata.current_details)


async def cli_list(address: str, query: str) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        str(TEMPORAL_CLI),
        "workflow",
        "list",
        "--address",
        address,
        "--query",
        query,
        "--output",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    text = out.decode().strip()
    if not text:
        return []
    listed = (
        json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines()]
    )
    return [w["execution"]["workflowId"] for w in listed]


async def test_running_ml_jobs_of_a_project_are_found_by_search_attributes(
    pool, temporal_client, settings
):
    job, seeded, _ = await make_job(pool, images=12, name="ui summary job")
    other, _, _ = await make_job(pool, images=3)
    actions = JobActions(pool, temporal_client, settings)
    async with running_workers(temporal_client, settings):
        await actions.run(job.id)
        await actions.run(other.id)
        handle = job_handle(temporal_client, job.id)
        query = (
            f'AntennaProjectId = {seeded.project_id} AND AntennaJobType = "ml"'
            f' AND AntennaPipelineSlug = "{seeded.pipeline_slug}" AND ExecutionStatus = "Running"'
        )

        async def listed() -> list[str]:
            return [w.id async for w in temporal_client.list_workflows(query)]

        # Visibility is eventually consistent: the job appears, and only it (no worker polls,
        # so it keeps running).
        assert await eventually(listed, within=30) == [NAMES.workflow_id(job.id)]
        address = settings.temporal.address
        assert await cli_list(address, query) == [NAMES.workflow_id(job.id)]

        desc = await handle.describe()
        summary = await desc.static_summary()
        details = await desc.static_details()
        assert summary is not None and summary.startswith("ui summary job · project ")
        assert f"pipeline {seeded.pipeline_slug}" in summary and summary.endswith("12 images")
        assert details is not None and f"- **pipeline**: {seeded.pipeline_slug}" in details
        assert f"- **job**: {job.id} ui summary job" in details

        async def processing() -> bool:
            return (await current_details(handle)).startswith(
                f"**processing** (job {job.id} STARTED)\n\nimages: 12"
            )

        await eventually(processing, within=30)
        await actions.cancel(job.id)
        await actions.cancel(other.id)
        await asyncio.gather(
            handle.result(), job_handle(temporal_client, other.id).result(), return_exceptions=True
        )
        assert (await current_details(handle)).startswith(
            f"**cancelled** (job {job.id} {JobState.REVOKED.value})"
        )
