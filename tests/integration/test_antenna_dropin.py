"""antenna-jobs as Antenna's job runner, on a database made by Antenna's own migrations.

Jobs are created as Antenna creates them (the recipe's rows), started as its Run and Retry
buttons start them (the row written as Job.enqueue writes it, then ``run_job`` sent with Celery to
RabbitMQ for the bridge), cancelled as its Cancel button does (the row, then its NATS clean-up);
the ADC's place is taken by the fake worker over HTTP with the recipe user's token. What is
checked is what Antenna's UI and API read: the job row, its log lines, and the detections,
classifications, taxa, occurrences and cached counts of the captures.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import nats
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from kombu.connection import Connection
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ConfigDict
from temporalio.client import WorkflowExecutionStatus

from activities import ml_run
from antenna_db import users
from antenna_db.cachalot import table_key
from antenna_db.users import Role
from api.context import ApiResources
from bridge.consumer import celery_queue
from bridge.main import run_bridge
from cli.fakes.worker import FakeWorker, FakeWorkerConfig
from core.settings import AntennaSettings, Settings
from core.states import JobState
from tests.helpers import eventually
from tests.helpers.antenna import (
    Recipe,
    add_captures,
    antenna_ui_view,
    cancel_as_antenna,
    cancel_with_antennas_cleanup,
    enqueue_as_antenna,
    new_antenna_job,
    retry_as_antenna,
)
from tests.helpers.api import http_client, running_app
from tests.helpers.broker import BROKER_URL, delete_queue, send_run_job
from tests.helpers.chaos import wait_final
from tests.helpers.db import NAMES
from tests.helpers.settings import with_settings
from tests.helpers.temporal import job_handle, running_workers

LABELS = ["Vanessa atalanta", "Limenitis"]
IMAGES = 1000


class _Param(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    key: str
    category: str
    value: Any


class _Stage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    key: str
    name: str
    status: JobState
    progress: float
    params: list[_Param]


class _Summary(BaseModel):
    status: JobState
    progress: float


class AntennaProgress(BaseModel):
    """Antenna's JobProgress as its API parses every job row (one bad row breaks its list)."""

    model_config = ConfigDict(extra="ignore")
    summary: _Summary
    stages: list[_Stage]
    errors: list[str] = []
    logs: list[str] = []


async def rows(pool: Any, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return list(await cur.fetchall())


async def one(pool: Any, sql: str, *params: Any) -> Any:
    found = await rows(pool, sql, *params)
    return next(iter(found[0].values())) if found else None


@pytest_asyncio.fixture(scope="module")
async def recipe(antenna_pool: Any, antenna_recipe: Recipe) -> Recipe:
    """The recipe's rows, its capture set grown to IMAGES captures."""
    made = antenna_recipe
    await add_captures(antenna_pool, made, IMAGES - 10, collection=made["collection"])
    return made


@dataclass
class Stack:
    settings: Settings
    pool: Any
    app: Any
    results_queue: str


@pytest_asyncio.fixture
async def stack(
    settings: Settings, antenna_database: Any, antenna_pool: Any, temporal_client: Any, queue: str
) -> AsyncIterator[Stack]:
    """Worker, API and bridge pointed at the Antenna database, Antenna's broker and cache."""
    async with antenna_stack(settings, antenna_database, antenna_pool, temporal_client, queue) as s:
        yield s


@contextlib.asynccontextmanager
async def antenna_stack(
    settings: Settings,
    antenna_database: Any,
    antenna_pool: Any,
    temporal_client: Any,
    queue: str,
    **jobs: Any,
) -> AsyncIterator[Stack]:
    """``stack``, with some JobSettings of the test's own (``jobs``)."""
    results_queue = f"{queue}-results"
    real = with_settings(
        settings,
        database=antenna_database,
        antenna=AntennaSettings(
            broker_url=BROKER_URL,
            jobs_queue=queue,
            results_queue=results_queue,
            cache_url=settings.redis.url,
        ),
        jobs=jobs,
    )
    nc = await nats.connect(real.nats.url)
    ready = asyncio.Event()
    bridge = asyncio.create_task(run_bridge(real, ready=ready))
    try:
        resources = ApiResources(pool=antenna_pool, nats=nc, temporal=temporal_client)
        async with running_workers(temporal_client, real), running_app(real, resources) as app:
            await asyncio.wait_for(ready.wait(), 30)
            yield Stack(settings=real, pool=antenna_pool, app=app, results_queue=results_queue)
    finally:
        bridge.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bridge
        await nc.drain()
        delete_queue(results_queue)


def fake_worker(stack: Stack, token: str, **config: Any) -> FakeWorker:
    client = http_client(stack.app, token)
    return FakeWorker(
        FakeWorkerConfig(
            api_url="http://testserver",
            token=token,
            pipelines=["recipe-pipeline"],
            detector_key="recipe-detector",
            classifier_key="recipe-classifier",
            labels=LABELS,
            poll_interval=0.2,
            concurrency=3,
            **config,
        ),
        transport=client._transport,
    )


async def run_as_antenna(stack: Stack, queue: str, job_id: int) -> None:
    """Antenna's Run button: the row as Job.enqueue writes it, then run_job to RabbitMQ."""
    await enqueue_as_antenna(stack.pool, job_id)
    await send_run_job(queue, job_id)


async def process(stack: Stack, queue: str, job_id: int, token: str, **config: Any) -> FakeWorker:
    async with fake_worker(stack, token, **config).running() as fake:
        await run_as_antenna(stack, queue, job_id)
        status = await wait_final(stack.pool, job_id, within=180)
        assert status in {JobState.SUCCESS, JobState.FAILURE}
    return fake


async def captures_job(pool: Any, recipe: Recipe, images: int) -> int:
    """A new job of Antenna's (not run yet) on ``images`` new captures of the recipe's."""
    return await new_antenna_job(pool, recipe, await add_captures(pool, recipe, images))


async def some_failed(
    stack: Stack, queue: str, recipe: Recipe, images: int, error_rate: float, seed: int
) -> tuple[int, int]:
    """A job of ``images`` new captures processed by a fake worker that fails about
    ``error_rate`` of them: the job, and how many failed (some, fewer than half)."""
    job_id = await captures_job(stack.pool, recipe, images)
    fake = await process(stack, queue, job_id, recipe.token, error_rate=error_rate, seed=seed)
    failed = fake.jobs[job_id].errors
    assert 0 < failed < images // 2
    return job_id, failed


@pytest.fixture
def waiting_job(
    settings: Settings,
    antenna_database: Any,
    antenna_pool: Any,
    temporal_client: Any,
    queue: str,
    recipe: Recipe,
) -> Callable[[int], AbstractAsyncContextManager[tuple[Stack, int, str]]]:
    """A job of ``images`` new captures run as Antenna runs it, no worker polling, until it says
    it waits for workers (a 4 s window): the stack, the job and what it said."""

    @contextlib.asynccontextmanager
    async def start(images: int) -> AsyncIterator[tuple[Stack, int, str]]:
        window = 4.0
        async with antenna_stack(
            settings,
            antenna_database,
            antenna_pool,
            temporal_client,
            queue,
            workers_seen_window=timedelta(seconds=window),
        ) as stack:
            job_id = await captures_job(stack.pool, recipe, images)
            await run_as_antenna(stack, queue, job_id)
            yield stack, job_id, await _said_waiting(stack.pool, job_id, window)

    return start


def crop_requests(queue: str) -> list[list[int]]:
    """Antenna's create_detection_images tasks published to ``queue`` (read and acked)."""
    found: list[list[int]] = []
    with Connection(BROKER_URL) as conn:
        channel = conn.channel()
        bound = celery_queue(queue)(channel)
        bound.declare()
        while (message := bound.get(no_ack=True)) is not None:
            assert message.headers["task"] == "ami.ml.tasks.create_detection_images"
            found.append(message.decode()[1]["source_image_ids"])
    return found


async def test_an_antenna_job_runs_to_success_and_reads_as_antennas_own(
    stack: Stack, queue: str, recipe: Recipe
) -> None:
    pool, job_id = stack.pool, recipe["job"]
    started = time.time()
    fake = await process(stack, queue, job_id, recipe.token, error_rate=0.05, empty_rate=0.1)
    posted = fake.jobs[job_id]
    assert posted.images == IMAGES and 0 < posted.errors < IMAGES * 0.2

    # The job row: status, times, progress as Antenna parses it, logs column left as it was.
    job = (await rows(pool, "SELECT * FROM jobs_job WHERE id = %s", job_id))[0]
    assert job["status"] == "SUCCESS"
    assert job["started_at"] is not None and job["finished_at"] >= job["started_at"]
    assert job["logs"] == {"stdout": [], "stderr": []}
    progress = AntennaProgress.model_validate(job["progress"])
    assert progress.summary.status == JobState.SUCCESS and progress.summary.progress == 1.0
    stages = {s.key: s for s in progress.stages}
    assert all(s.status == JobState.SUCCESS and s.progress == 1.0 for s in stages.values())
    params = {s: {p.key: p.value for p in stages[s].params} for s in stages}
    assert params["collect"]["total_images"] == IMAGES
    assert params["process"] == {"processed": IMAGES, "remaining": 0, "failed": posted.errors}
    assert params["results"] == {
        "captures": IMAGES - posted.errors,
        "detections": posted.detections,
        "classifications": posted.classifications,
    }
    logs = await rows(
        pool, "SELECT level, message, context FROM jobs_joblog WHERE job_id = %s", job_id
    )
    messages = [r["message"] for r in logs]
    assert any(m.startswith("Run started from Antenna's run_job message") for m in messages)
    assert any(m.startswith("Job finished: SUCCESS") for m in messages)
    assert {r["level"] for r in logs} <= {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}

    # Detections: boxes as JSON lists, the pipeline's detector, the captures' timestamps.
    detections = await rows(
        pool,
        "SELECT d.* FROM main_detection d JOIN main_sourceimagecollection_images ci"
        " ON ci.sourceimage_id = d.source_image_id WHERE ci.sourceimagecollection_id = %s",
        recipe["collection"],
    )
    real = [d for d in detections if d["bbox"] is not None]
    markers = [d for d in detections if d["bbox"] is None]
    assert len(real) == posted.detections
    assert all(isinstance(d["bbox"], list) and len(d["bbox"]) == 4 for d in real)
    assert {d["detection_algorithm_id"] for d in detections} == {recipe["detector"]}
    assert all(d["timestamp"] is not None and d["detection_time"] is not None for d in real)
    empty = posted.images - posted.errors - len({d["source_image_id"] for d in real})
    assert len(markers) == empty > 0
    assert all(d["occurrence_id"] is None and d["path"] is None for d in markers)

    # Classifications: score = max(scores), float8 arrays, the classifier's category map.
    classifications = await rows(
        pool,
        "SELECT c.*, t.name, t.rank, t.display_name FROM main_classification c"
        " JOIN main_taxon t ON t.id = c.taxon_id WHERE c.detection_id = ANY(%s)",
        [d["id"] for d in real],
    )
    assert len(classifications) == posted.classifications
    assert all(c["score"] == max(c["scores"]) for c in classifications)
    assert all(len(c["scores"]) == len(LABELS) == len(c["logits"]) for c in classifications)
    assert {c["algorithm_id"] for c in classifications} == {recipe["classifier"]}
    assert {c["category_map_id"] for c in classifications} == {recipe["category_map"]}
    # Taxa made as Antenna makes them: rank from the category map, "sp." for a genus.
    taxa = {c["name"]: (c["rank"], c["display_name"]) for c in classifications}
    assert taxa == {
        "Vanessa atalanta": ("SPECIES", "Vanessa atalanta"),
        "Limenitis": ("GENUS", "Limenitis sp."),
    }
    listed = await rows(
        pool,
        "SELECT t.name FROM main_taxalist l JOIN main_taxalist_taxa lt ON lt.taxalist_id = l.id"
        " JOIN main_taxon t ON t.id = lt.taxon_id WHERE l.name = 'Taxa returned by Recipe"
        " Classifier'",
    )
    assert sorted(r["name"] for r in listed) == sorted(LABELS)

    # One occurrence per detection, with the capture's project, station and session and the
    # determination of its classification.
    occurrences = await rows(
        pool,
        "SELECT o.*, c.taxon_id AS classified, c.score FROM main_occurrence o"
        " JOIN main_detection d ON d.occurrence_id = o.id"
        " JOIN main_classification c ON c.detection_id = d.id WHERE d.id = ANY(%s)",
        [d["id"] for d in real],
    )
    assert len(occurrences) == len(real) == len({o["id"] for o in occurrences})
    assert all(o["determination_id"] == o["classified"] for o in occurrences)
    assert all(o["determination_score"] == o["score"] for o in occurrences)
    assert {(o["project_id"], o["deployment_id"], o["event_id"]) for o in occurrences} == {
        (recipe["project"], recipe["deployment"], recipe["event"])
    }

    # Cached counts: captures (each real box with a determination at or above the project's
    # 0.5 threshold), the session and the station.
    counted = [o for o in occurrences if o["determination_score"] >= 0.5]
    assert await one(
        pool,
        "SELECT sum(detections_count) FROM main_sourceimage si"
        " JOIN main_sourceimagecollection_images ci ON ci.sourceimage_id = si.id"
        " WHERE ci.sourceimagecollection_id = %s",
        recipe["collection"],
    ) == len(counted)
    event = (await rows(pool, "SELECT * FROM main_event WHERE id = %s", recipe["event"]))[0]
    assert event["captures_count"] == IMAGES and event["detections_count"] == len(counted)
    assert event["occurrences_count"] == len(counted)
    assert event["calculated_fields_updated_at"] is not None
    station = (
        await rows(pool, "SELECT * FROM main_deployment WHERE id = %s", recipe["deployment"])
    )[0]
    assert (station["captures_count"], station["events_count"]) == (IMAGES, 1)
    assert station["detections_count"] == len(counted)
    assert station["taxa_count"] == len({o["determination_id"] for o in counted})

    # Antenna's query cache told of every table written; its crop worker asked for the crops.
    cache = aioredis.Redis.from_url(stack.settings.redis.url)
    try:
        for table in (
            "jobs_job",
            "jobs_joblog",
            "main_detection",
            "main_classification",
            "main_occurrence",
            "main_sourceimage",
            "main_event",
            "main_deployment",
        ):
            stamp = await cache.get(table_key(table))
            assert stamp is not None and pickle.loads(stamp) >= started, table
    finally:
        await cache.aclose()
    cropped = {i for ids in crop_requests(stack.results_queue) for i in ids}
    assert cropped == {d["source_image_id"] for d in real}
    # Nothing of ours left behind: no stream, no inbox rows.
    nc = await nats.connect(stack.settings.nats.url)
    try:
        with pytest.raises(NotFoundError):
            await nc.jetstream().stream_info(NAMES.stream(job_id))
    finally:
        await nc.drain()
    assert await one(pool, "SELECT count(*) FROM result_inbox WHERE job_id = %s", job_id) == 0

    # A second job on the same capture set: only what the first left unprocessed (the
    # captures whose result was an error) is collected.
    second = await new_antenna_job(pool, recipe, recipe["collection"])
    fake = await process(stack, queue, second, recipe.token)
    assert await one(pool, "SELECT count(*) FROM job_images WHERE job_id = %s", second) == (
        posted.errors
    )
    assert fake.jobs[second].images == posted.errors


async def test_a_retry_from_antenna_queues_only_what_is_left(
    stack: Stack, queue: str, recipe: Recipe
) -> None:
    pool = stack.pool
    job_id, failed = await some_failed(stack, queue, recipe, 60, error_rate=0.3, seed=3)
    await retry_as_antenna(pool, job_id)
    retried = await process(stack, queue, job_id, recipe.token, seed=4)
    assert retried.jobs[job_id].images == failed
    assert await one(pool, "SELECT count(*) FROM job_images WHERE job_id = %s", job_id) == failed
    job = await rows(pool, "SELECT status, progress FROM jobs_job WHERE id = %s", job_id)
    assert job[0]["status"] == "SUCCESS"
    AntennaProgress.model_validate(job[0]["progress"])


async def test_a_cancel_from_antennas_ui_ends_revoked_with_the_stream_gone(
    stack: Stack, queue: str, recipe: Recipe, temporal_client: Any
) -> None:
    pool = stack.pool
    job_id = await captures_job(pool, recipe, 40)
    await run_as_antenna(stack, queue, job_id)
    nc = await nats.connect(stack.settings.nats.url)
    try:
        js = nc.jetstream()

        async def published() -> bool:
            try:
                return (await js.stream_info(NAMES.stream(job_id))).state.messages == 40
            except NotFoundError:
                return False

        await eventually(published, within=60)
        await cancel_as_antenna(pool, job_id)
        # Antenna's own clean-up of the same names (cleanup_async_job_resources).
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(NAMES.stream(job_id))
        result = await eventually(lambda: _closed(temporal_client, job_id), within=60, interval=0.2)
        assert result in {WorkflowExecutionStatus.CANCELED, WorkflowExecutionStatus.COMPLETED}
        with pytest.raises(NotFoundError):
            await js.stream_info(NAMES.stream(job_id))
    finally:
        await nc.drain()
    job = (await rows(pool, "SELECT status, finished_at FROM jobs_job WHERE id = %s", job_id))[0]
    assert job["status"] == "REVOKED" and job["finished_at"] is not None
    assert await one(pool, "SELECT count(*) FROM result_inbox WHERE job_id = %s", job_id) == 0


async def _closed(client: Any, job_id: int) -> WorkflowExecutionStatus | None:
    desc = await job_handle(client, job_id).describe()
    return None if desc.status == WorkflowExecutionStatus.RUNNING else desc.status


async def test_who_may_work_on_a_projects_jobs(stack: Stack, recipe: Recipe) -> None:
    """Superusers and the project's MLDataManagers may fetch tasks and post results; members of
    another project are refused (403), inactive users and missing tokens are not let in (401).
    Registration can link another project's pipeline but never change it."""
    pool = stack.pool
    async with pool.connection() as conn:
        superuser = await users.create_token_user(conn, "super", superuser=True)
        cur = await conn.execute(
            "INSERT INTO main_project (created_at, updated_at, name, description, image, active,"
            " priority, owner_id, feature_flags, default_filters_score_threshold,"
            " default_processing_pipeline_id, session_time_gap_seconds, draft) VALUES (now(),"
            " now(), %s, '', '', true, 1, NULL, '{}', 0.5, NULL, 7200, false) RETURNING id",
            (f"Other {uuid.uuid4().hex[:6]}",),
        )
        other_project = (await cur.fetchone())["id"]
        outsider = await users.create_token_user(
            conn, "outsider", project_id=other_project, role=Role.ML_DATA_MANAGER
        )
        inactive = await users.create_token_user(
            conn, "gone", project_id=recipe["project"], role=Role.ML_DATA_MANAGER
        )
        await conn.execute(
            "UPDATE users_user SET is_active = false WHERE id ="
            " (SELECT user_id FROM authtoken_token WHERE key = %s)",
            (inactive,),
        )
    job_id = recipe["job"]
    expected = {superuser: 200, recipe.token: 200, outsider: 403, inactive: 401, None: 401}
    for key, status in expected.items():
        async with http_client(stack.app, key) as client:
            tasks = await client.post(f"/jobs/{job_id}/tasks/", json={"batch_size": 1})
            results = await client.post(f"/jobs/{job_id}/result/", json={"results": []})
        assert (tasks.status_code, results.status_code) == (status, status), key

    body = {
        "processing_service_name": "Outsider's worker",
        "pipelines": [
            {
                "name": "Recipe Pipeline",
                "slug": "recipe-pipeline",
                "version": 1,
                "algorithms": [
                    {
                        "name": "Sneaky",
                        "key": f"sneaky-{uuid.uuid4().hex[:6]}",
                        "task_type": "localization",
                    }
                ],
            }
        ],
    }
    async with http_client(stack.app, outsider) as client:
        refused = await client.post(f"/projects/{recipe['project']}/pipelines/", json=body)
        changing = await client.post(f"/projects/{other_project}/pipelines/", json=body)
        body["pipelines"][0]["algorithms"] = []
        linked = await client.post(f"/projects/{other_project}/pipelines/", json=body)
    assert refused.status_code == 403
    # Adding an algorithm to a pipeline the recipe's project uses is refused, naming it (issue
    # 17); the pipeline as it is may be linked to the outsider's own project.
    assert changing.status_code == 400
    assert changing.json()["field"] == "pipelines[0].algorithms[0].key"
    assert linked.status_code == 201 and linked.json()["error"] is None
    assert (
        await one(
            pool,
            "SELECT count(*) FROM ml_pipeline_algorithms WHERE pipeline_id = %s",
            recipe["pipeline"],
        )
        == 2
    )


# --- What Antenna's UI shows of our jobs (issue 22): read as its job serializer reads them ----


def _fake_error(image_id: int) -> str:
    return f"fake worker: simulated failure of image {image_id}"


async def _failed_images(pool: Any, job_id: int) -> set[int]:
    found = await rows(
        pool,
        "SELECT source_image_id FROM job_images WHERE job_id = %s AND status = 'failed'",
        job_id,
    )
    return {r["source_image_id"] for r in found}


async def test_antennas_ui_lists_each_failed_image_in_the_job_errors(
    stack: Stack, queue: str, recipe: Recipe
) -> None:
    pool = stack.pool
    job_id, failed = await some_failed(stack, queue, recipe, 40, error_rate=0.25, seed=7)

    view = await antenna_ui_view(pool, job_id)
    assert view.status == "SUCCESS"
    images = await _failed_images(pool, job_id)
    assert len(images) == failed
    # Antenna's line per failed image, at ERROR: the Errors box lists them and nothing else.
    expected = [
        f"Pipeline returned error for job {job_id}, image {i}: {_fake_error(i)}"
        for i in sorted(images)
    ]
    assert sorted(view.lines("ERROR")) == expected
    assert len(view.errors) == failed
    process_params = view.params("process")
    assert process_params["failed"] == failed and "workers" not in process_params
    # Workers polled from the start: nothing said about waiting for them.
    assert not any(
        "Waiting for workers" in line or "Workers are back" in line for line in view.stdout
    )


async def test_per_image_error_lines_are_bounded_with_one_count_line(
    stack: Stack, queue: str, recipe: Recipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ml_run, "ERROR_LINES_PER_RUN", 5)
    pool = stack.pool
    job_id = await captures_job(pool, recipe, 20)
    await process(stack, queue, job_id, recipe.token, error_rate=1.0)

    view = await antenna_ui_view(pool, job_id)
    assert view.status == "FAILURE"
    errors = view.lines("ERROR")
    listed = [e for e in errors if e.startswith(f"Pipeline returned error for job {job_id}, ")]
    assert len(listed) == 5
    assert (
        "20 of 20 images failed; only the first 5 errors the pipeline returned are listed"
        " (15 failed images not listed one by one)"
    ) in errors
    assert any(e.startswith("Job finished: FAILURE") for e in errors)
    assert len(errors) == len(view.errors) == 7


async def _said_waiting(pool: Any, job_id: int, window: float) -> str:
    """The job says it waits for workers (param and log line), and said so only once the
    window had passed since it started; the warning."""

    async def waiting() -> bool:
        view = await antenna_ui_view(pool, job_id)
        return view.params("process").get("workers") == "waiting for workers"

    await eventually(waiting, within=60)
    view = await antenna_ui_view(pool, job_id)
    (warning,) = [w for w in view.lines("WARNING") if w.startswith("Waiting for workers")]
    times = await rows(
        pool,
        "SELECT min(created_at) FILTER (WHERE message LIKE 'Job started%%') AS started,"
        " min(created_at) FILTER (WHERE message LIKE 'Waiting for workers%%') AS warned"
        " FROM jobs_joblog WHERE job_id = %s",
        job_id,
    )
    # Not at once (the bug: 2 s after publishing, with no poll ever seen): the window first.
    assert times[0]["warned"] - times[0]["started"] >= timedelta(seconds=window)
    return warning


async def test_a_job_that_waited_for_workers_reads_as_antennas_own(
    waiting_job: Any, recipe: Recipe
) -> None:
    async with waiting_job(20) as (stack, job_id, warning):
        pool = stack.pool
        assert "recipe-pipeline" in warning
        async with fake_worker(stack, recipe.token).running():
            assert await wait_final(pool, job_id, within=180) == JobState.SUCCESS

    view = await antenna_ui_view(pool, job_id)
    assert view.status == "SUCCESS" and view.errors == []
    chronological = list(reversed(view.stdout))
    waits = [i for i, line in enumerate(chronological) if "WARNING Waiting for workers" in line]
    backs = [i for i, line in enumerate(chronological) if "INFO Workers are back" in line]
    assert len(waits) == 1 and len(backs) == 1 and waits[0] < backs[0]
    assert view.params("process") == {"processed": 20, "remaining": 0, "failed": 0}


async def test_a_cancel_through_antennas_clean_up_shows_no_error(
    waiting_job: Any, temporal_client: Any, redis_client: Any
) -> None:
    """Antenna's Job.cancel deletes ``job-{id}-consumer`` and ``job_{id}`` and writes an ERROR
    to the job for each one it does not find: it finds both. The job had been waiting for
    workers; REVOKED, it no longer says so."""
    async with waiting_job(30) as (stack, job_id, _):
        pool = stack.pool
        nc = await nats.connect(stack.settings.nats.url)
        try:
            await cancel_with_antennas_cleanup(pool, nc.jetstream(), redis_client, job_id)
            closed = await eventually(
                lambda: _closed(temporal_client, job_id), within=60, interval=0.2
            )
            assert closed in {WorkflowExecutionStatus.CANCELED, WorkflowExecutionStatus.COMPLETED}
        finally:
            await nc.drain()

    view = await antenna_ui_view(pool, job_id)
    assert view.status == "REVOKED"
    assert view.errors == [], view.errors
    assert not any("Failed to" in line for line in view.stdout)
    info = view.lines("INFO")
    consumer = f"job-{job_id}-consumer"
    assert any(m.startswith(f"Finalizing NATS consumer {consumer} before deletion") for m in info)
    assert f"Deleted NATS consumer {consumer} for job '{job_id}'" in info
    assert f"Deleted NATS stream job_{job_id} for job '{job_id}'" in info
    assert f"Cleaned up NATS resources for job {job_id}" in info
    assert "workers" not in view.params("process")
