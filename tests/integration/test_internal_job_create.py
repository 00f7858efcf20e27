"""Creating INTERNAL jobs through the HTTP API and the CLI: params checked per type (errors name
the field), the job starts its own workflow type, and its result shows in the job's status."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from antenna_db.seed import seed
from cli.main import app
from core.settings import Settings
from core.states import JobState
from tests.helpers.db import fetch, get_job
from tests.helpers.jobs import file_size
from tests.helpers.processes import cli_env
from tests.helpers.settings import with_export
from tests.helpers.temporal import job_handle, running_workers


@pytest.fixture
def export_settings(settings: Settings, tmp_path: Path) -> Settings:
    return with_export(settings, tmp_path)


async def seeded(pool, images: int = 6):
    async with pool.connection() as conn:
        return await seed(conn, images)


async def test_api_creates_an_export_job(api, pool):
    project = await seeded(pool)
    response = await api.client.post(
        "/jobs/",
        json={
            "job_type_key": "data_export",
            "project_id": project.project_id,
            "params": {"format": "jsonl"},
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["job_type"], body["dispatch_mode"], body["status"]) == (
        "data_export",
        "internal",
        "CREATED",
    )
    assert body["params"] == {"format": "jsonl"}
    assert body["pipeline_slug"] is None and body["collection_id"] is None
    stages = [s["key"] for s in body["progress"]["stages"]]
    assert stages == ["exporting_data", "saving_file"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"job_type_key": "nope"}, "job_type_key"),
        (
            {"job_type": "populate_captures_collection", "params": {"method": "random"}},
            "params.size",
        ),
        (
            {"job_type_key": "populate_captures_collection", "params": {"method": "all"}},
            "collection",
        ),
        (
            {"job_type_key": "populate_captures_collection", "params": {"method": "x"}},
            "params.method",
        ),
        ({"job_type_key": "data_export", "params": {"format": "xml"}}, "params.format"),
        ({"job_type_key": "data_export", "params": {"format": "csv", "x": 1}}, "params.x"),
        ({"job_type_key": "data_export", "params": ["csv"]}, "params"),
        ({"job_type_key": "data_export", "project_id": 0}, "project"),
    ],
)
async def test_api_refuses_bad_internal_jobs_naming_the_field(body, field, api, pool):
    project = await seeded(pool)
    payload: dict[str, Any] = {"project_id": project.project_id, **body}
    if field != "collection" and "populate" in str(body.get("job_type_key", body.get("job_type"))):
        payload["collection_id"] = project.collection_id
    response = await api.client.post("/jobs/", json=payload)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field, response.json()


async def test_api_start_now_runs_a_populate_job(api, pool, temporal_client, settings):
    project = await seeded(pool, 10)
    async with running_workers(temporal_client, settings):
        response = await api.client.post(
            "/jobs/?start_now=1",
            json={
                "job_type_key": "populate_captures_collection",
                "project_id": project.project_id,
                "collection_id": project.collection_id,
                "params": {"method": "every_nth", "every": 3},
            },
        )
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        assert (await job_handle(temporal_client, job_id).result()).status == JobState.SUCCESS
        detail = (await api.client.get(f"/jobs/{job_id}/")).json()
    assert detail["status"] == "SUCCESS"
    assert detail["result"]["captures_added"] == 4
    members = await fetch(
        pool,
        "SELECT count(*) AS n FROM main_sourceimagecollection_images"
        " WHERE sourceimagecollection_id = %s",
        project.collection_id,
    )
    assert members[0]["n"] == 4


async def invoke(settings: Settings, *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=cli_env(settings))


async def test_cli_export_job_shows_its_file_in_status(pool, temporal_client, export_settings):
    project = await seeded(pool)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO main_detection (created_at, updated_at, source_image_id,"
            " detection_algorithm_id, bbox) SELECT now(), now(), si.id, a.id, '[1, 2, 3, 4]'"
            " FROM main_sourceimage si, ml_algorithm a"
            " WHERE si.project_id = %s AND a.key = 'fake-detector'",
            (project.project_id,),
        )
    async with running_workers(temporal_client, export_settings):
        created = await invoke(
            export_settings,
            "job", "create", "--type", "data_export", "--project", str(project.project_id),
            "--collection", str(project.collection_id), "--format", "jsonl", "--start",
        )  # fmt: skip
        assert created.exit_code == 0, created.output
        job_id = json.loads(created.stdout)["id"]
        assert (await job_handle(temporal_client, job_id).result()).status == JobState.SUCCESS
    status = await invoke(export_settings, "job", "status", str(job_id), "--json")
    assert status.exit_code == 0, status.output
    body = json.loads(status.stdout)
    assert body["status"] == "SUCCESS" and body["job_type"] == "data_export"
    path = Path(body["result"]["path"])
    assert body["result"]["size"] == file_size(path) > 0
    assert body["result"]["records"] == 6 and path.suffix == ".jsonl"
    human = await invoke(export_settings, "job", "status", str(job_id))
    assert f"file: {path}" in human.stdout


async def test_cli_refuses_bad_job_create_with_the_field(pool, settings):
    project = await seeded(pool)
    args = ["job", "create", "--project", str(project.project_id)]
    missing = await invoke(
        settings, *args, "--type", "populate_captures_collection",
        "--collection", str(project.collection_id), "--method", "random",
    )  # fmt: skip
    assert missing.exit_code == 1 and "params.size: required by method random" in missing.stderr
    ml = await invoke(settings, *args)
    assert ml.exit_code == 1 and "an ML job needs --pipeline and --collection" in ml.stderr
    created = await invoke(
        settings, *args, "--type", "populate_captures_collection",
        "--collection", str(project.collection_id), "--method", "time_window",
        "--hour-start", "22", "--hour-end", "2",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    job = await get_job(pool, json.loads(created.stdout)["id"])
    assert job.params == {"method": "time_window", "hour_start": 22, "hour_end": 2}
    assert job.status == JobState.CREATED


async def test_cli_service_add_registers_a_push_service(pool, settings):
    project = await seeded(pool)
    args = ["service", "add", "--name", f"svc {project.pipeline_slug}", "--project"]
    added = await invoke(
        settings, *args, str(project.project_id), "--endpoint-url", "http://127.0.0.1:9/x/",
        "--pipeline", project.pipeline_slug,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    rows = await fetch(
        pool,
        "SELECT ps.endpoint_url, psp.pipeline_id, psj.project_id FROM ml_processingservice ps"
        " JOIN ml_processingservice_pipelines psp ON psp.processingservice_id = ps.id"
        " JOIN ml_processingservice_projects psj ON psj.processingservice_id = ps.id"
        " WHERE ps.id = %s",
        json.loads(added.stdout)["id"],
    )
    assert [r["endpoint_url"] for r in rows] == ["http://127.0.0.1:9/x"]
    assert rows[0]["project_id"] == project.project_id
    bad = await invoke(
        settings, *args, str(project.project_id), "--endpoint-url", "ftp://x",
        "--pipeline", project.pipeline_slug,
    )  # fmt: skip
    assert bad.exit_code == 1 and "endpoint_url: not an http(s) URL" in bad.stderr
