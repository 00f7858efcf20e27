"""INTERNAL jobs end to end (populate_captures_collection, data_export): the same workflow id,
status, progress, cancel and crash guarantees as ML jobs, against real Postgres and Temporal."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError

from antenna_db.collections import ANTENNA_METHOD
from antenna_db.job_store import JobRecord
from antenna_db.seed import CLASSIFIER_KEY, DETECTOR_KEY, SeedResult, new_capture_set, seed
from core.job_params import SampleMethod
from core.job_requests import NewInternalJob
from core.settings import ExportSettings, Settings
from core.states import DispatchMode, JobState, JobType
from job_control.actions import JobActions
from tests.helpers import eventually
from tests.helpers.chaos import DbHold
from tests.helpers.db import collection_image_ids, fetch, get_job, job_logs
from tests.helpers.jobs import file_size
from tests.helpers.processes import worker_processes
from tests.helpers.settings import with_export, with_settings
from tests.helpers.temporal import (
    heartbeat_details,
    job_handle,
    run_to_end,
    run_to_failure,
    running_workers,
)

IMAGES = 150  # captures every minute from 2026-06-01 22:01 UTC to 2026-06-02 00:30


async def new_collection(pool, project_id: int, members: list[int] | None = None) -> int:
    async with pool.connection() as conn:
        collection_id = await new_capture_set(conn, project_id, "sample")
        if members:
            await conn.execute(
                "INSERT INTO main_sourceimagecollection_images"
                " (sourceimagecollection_id, sourceimage_id) SELECT %s, unnest(%s::bigint[])",
                (collection_id, members),
            )
    return collection_id


async def create(
    pool, temporal_client, settings, job_type: JobType, start: bool = False, **kwargs
) -> JobRecord:
    new = NewInternalJob(job_type=job_type, **kwargs)
    return await JobActions(pool, temporal_client, settings).create_internal(new, start=start)


async def project_images(pool, project_id: int) -> list[int]:
    rows = await fetch(
        pool,
        'SELECT id FROM main_sourceimage WHERE project_id = %s ORDER BY "timestamp", id',
        project_id,
    )
    return [r["id"] for r in rows]


async def seeded_images(pool, images: int = IMAGES) -> tuple[SeedResult, list[int]]:
    """A new project of ``images`` captures, and their ids in time order."""
    async with pool.connection() as conn:
        seeded = await seed(conn, images)
    return seeded, await project_images(pool, seeded.project_id)


async def populate_job(
    pool, temporal_client, settings, members: slice, params: dict
) -> tuple[JobRecord, int, list[int]]:
    """A populate job (not started) of a new project's capture set that holds the ``members``
    of its captures; the job, the set and the captures' ids."""
    seeded, ids = await seeded_images(pool)
    collection = await new_collection(pool, seeded.project_id, members=ids[members])
    job = await populate(pool, temporal_client, settings, seeded.project_id, collection, params)
    return job, collection, ids


async def populate(
    pool, temporal_client, settings, project_id: int, collection: int, params: dict, start=False
) -> JobRecord:
    """A populate_captures_collection job of ``collection``."""
    return await create(
        pool,
        temporal_client,
        settings,
        JobType.POPULATE_CAPTURES_COLLECTION,
        project_id=project_id,
        collection_id=collection,
        params=params,
        start=start,
    )


# --- populate_captures_collection -----------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected", "considered"),
    [
        ({"method": "all"}, lambda ids: ids, IMAGES),
        ({"method": "every_nth", "every": 4}, lambda ids: ids[::4], IMAGES),
        ({"method": "time_window", "hour_start": 23, "hour_end": 23}, lambda ids: ids[59:119], 60),
        # Wraps past midnight: 23:00-00:59.
        ({"method": "time_window", "hour_start": 23, "hour_end": 0}, lambda ids: ids[59:], 91),
        ({"method": "time_window", "date_start": "2026-06-02"}, lambda ids: ids[119:], 31),
        (
            {"method": "every_nth", "every": 10, "hour_start": 22, "hour_end": 22},
            lambda ids: ids[:59][::10],
            59,
        ),
    ],
)
async def test_populate_fills_the_collection_by_method(
    params, expected, considered, pool, temporal_client, settings
):
    job, collection, ids = await populate_job(
        pool, temporal_client, settings, slice(-2, None), params
    )
    assert job.dispatch_mode == DispatchMode.INTERNAL
    result = await run_to_end(pool, temporal_client, settings, job.id)
    desc = await job_handle(temporal_client, job.id).describe()
    want = sorted(expected(ids))
    assert await collection_image_ids(pool, collection) == want
    assert result.status == JobState.SUCCESS
    assert desc.workflow_type == "InternalJobWorkflow"
    done = await get_job(pool, job.id)
    stage = done.progress.stage("populate_captures_collection")
    assert done.status == JobState.SUCCESS and done.finished_at is not None
    assert (stage.status, stage.progress) == (JobState.SUCCESS, 1.0)
    assert stage.param("captures_added") == len(want)
    assert stage.param("method") == params["method"]
    assert done.progress.summary.progress == 1.0
    assert done.result == {
        "collection_id": collection,
        "method": params["method"],
        "captures_considered": considered,
        "captures_added": len(want),
    }
    rows = await fetch(
        pool, "SELECT method, kwargs FROM main_sourceimagecollection WHERE id = %s", collection
    )
    method = SampleMethod(params["method"])
    assert rows[0]["method"] == ANTENNA_METHOD.get(method, method.value)
    messages = [r["message"] for r in await job_logs(pool, job.id)]
    assert any(
        m.startswith(f"Job finished: SUCCESS. Collection {collection} now holds") for m in messages
    )


async def test_populate_random_is_the_same_sample_for_the_same_seed(
    pool, temporal_client, settings
):
    seeded, project_ids = await seeded_images(pool)
    ids = set(project_ids)
    samples = []
    async with running_workers(temporal_client, settings):
        for seed_value in (7, 7, 8):
            collection = await new_collection(pool, seeded.project_id)
            params = {"method": "random", "size": 12, "seed": seed_value}
            job = await populate(
                pool, temporal_client, settings, seeded.project_id, collection, params, start=True
            )
            assert (await job_handle(temporal_client, job.id).result()).status == JobState.SUCCESS
            samples.append(await collection_image_ids(pool, collection))
    assert all(len(s) == 12 and set(s) <= ids for s in samples)
    assert samples[0] == samples[1] != samples[2]


async def _populate_job_held(pool, temporal_client, settings):
    job, collection, ids = await populate_job(
        pool, temporal_client, settings, slice(3), {"method": "all"}
    )
    # The populate statement waits inside its transaction, some rows already inserted.
    hold = DbHold(
        settings,
        "main_sourceimagecollection_images",
        "INSERT",
        f"NEW.sourceimagecollection_id = {collection} AND NEW.sourceimage_id = {ids[100]}",
    )
    return job, collection, ids, hold


@pytest.mark.parametrize("how", ["api", "temporal"])
async def test_populate_cancelled_mid_way_leaves_the_collection_as_it_was(
    how, pool, temporal_client, settings
):
    job, collection, ids, hold = await _populate_job_held(pool, temporal_client, settings)
    async with running_workers(temporal_client, settings), hold:
        actions = JobActions(pool, temporal_client, settings)
        await actions.run(job.id)
        await hold.wait_blocked()
        if how == "api":
            await actions.cancel(job.id)
        else:  # `temporal workflow cancel` and the Web UI make this same call
            await job_handle(temporal_client, job.id).cancel()
        with pytest.raises(WorkflowFailureError) as raised:
            await job_handle(temporal_client, job.id).result()
        # The statement was cancelled with the activity, not left waiting for the hold.
        assert await hold.waiting_pids() == []
    assert isinstance(raised.value.cause, CancelledError)
    assert (await job_handle(temporal_client, job.id).describe()).status == (
        WorkflowExecutionStatus.CANCELED
    )
    done = await get_job(pool, job.id)
    assert done.status == JobState.REVOKED and done.finished_at is not None
    assert await collection_image_ids(pool, collection) == sorted(ids[:3])
    rows = await fetch(
        pool, "SELECT method FROM main_sourceimagecollection WHERE id = %s", collection
    )
    assert rows[0]["method"] == "manual"


@pytest.mark.chaos
async def test_populate_worker_killed_mid_way_finishes_on_another(
    pool, temporal_client, settings, tmp_path
):
    job, collection, ids, hold = await _populate_job_held(pool, temporal_client, settings)
    with worker_processes(settings, tmp_path) as workers:
        async with hold:
            first = workers.start()
            await JobActions(pool, temporal_client, settings).run(job.id)
            await hold.wait_blocked()
            first.kill()
            await hold.terminate_waiters()
        workers.start()
        result = await job_handle(temporal_client, job.id).result()
    assert result.status == JobState.SUCCESS
    assert await collection_image_ids(pool, collection) == sorted(ids)
    done = await get_job(pool, job.id)
    assert done.result is not None and done.result["captures_added"] == IMAGES


# --- data_export ------------------------------------------------------------------------------


async def add_detections(pool, seeded: SeedResult) -> None:
    """Per image: two detections (the first with two classifications, the second with none);
    every third image also gets a null-bbox marker, which is not exported."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO main_detection (created_at, updated_at, source_image_id,"
            ' detection_algorithm_id, bbox, "timestamp", detection_time)'
            " SELECT now(), now(), si.id, a.id, jsonb_build_array(k * 10, 1, k * 10 + 5, 6),"
            ' si."timestamp", si."timestamp"'
            " FROM main_sourceimage si, ml_algorithm a, generate_series(1, 2) AS k"
            " WHERE si.project_id = %s AND a.key = %s",
            (seeded.project_id, DETECTOR_KEY),
        )
        await conn.execute(
            "INSERT INTO main_detection (created_at, updated_at, source_image_id,"
            " detection_algorithm_id) SELECT now(), now(), si.id, a.id"
            " FROM main_sourceimage si, ml_algorithm a"
            " WHERE si.project_id = %s AND a.key = %s AND si.id %% 3 = 0",
            (seeded.project_id, DETECTOR_KEY),
        )
        await conn.execute(
            "INSERT INTO main_taxon (created_at, updated_at, name, rank, active, author, notes,"
            " parents_json, display_name) SELECT now(), now(), n, 'FAMILY', true, '', '', '[]', n"
            " FROM unnest(ARRAY['Noctuidae', 'Erebidae']) AS n ON CONFLICT DO NOTHING"
        )
        await conn.execute(
            'INSERT INTO main_classification (created_at, updated_at, "timestamp", detection_id,'
            " algorithm_id, taxon_id, score, scores, terminal)"
            " SELECT now(), now(), now(), d.id, a.id, tx.id,"
            " (SELECT max(v) FROM unnest(t.scores) v), t.scores, t.terminal"
            " FROM main_detection d JOIN main_sourceimage si ON si.id = d.source_image_id,"
            " ml_algorithm a, (VALUES (1, 'Noctuidae', '{0.9,0.1}'::float8[], true),"
            "  (2, 'Erebidae', '{0.2,0.4}'::float8[], false)) AS t(n, taxon, scores, terminal)"
            " JOIN main_taxon tx ON tx.name = t.taxon"
            " WHERE si.project_id = %s AND a.key = %s AND d.bbox->>0 = '10' ORDER BY d.id, t.n",
            (seeded.project_id, CLASSIFIER_KEY),
        )


async def export_job(
    pool, temporal_client, settings, images: int, members: slice | None = None, **kwargs
):
    """An export job (not started) of a new project of ``images`` with detections; of a new
    capture set of its ``members`` if given."""
    seeded, ids = await seeded_images(pool, images)
    await add_detections(pool, seeded)
    if members is not None:
        kwargs["collection_id"] = await new_collection(
            pool, seeded.project_id, members=ids[members]
        )
    job = await create(
        pool,
        temporal_client,
        settings,
        JobType.DATA_EXPORT,
        project_id=seeded.project_id,
        **kwargs,
    )
    return job, seeded


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def read_export(path: Path, fmt: str) -> list[dict]:
    with path.open(newline="") as file:
        if fmt == "csv":
            return list(csv.DictReader(file))
        return [json.loads(line) for line in file]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_export_streams_detections_and_classifications(
    fmt, pool, temporal_client, settings, tmp_path
):
    settings = with_export(settings, tmp_path, batch_size=7)
    job, seeded = await export_job(pool, temporal_client, settings, 30, params={"format": fmt})
    result = await run_to_end(pool, temporal_client, settings, job.id)
    assert result.status == JobState.SUCCESS
    done = await get_job(pool, job.id)
    path = Path(done.result["path"])
    assert path.parent == (tmp_path / "exports").resolve()
    assert done.result["size"] == file_size(path) > 0
    assert (done.result["records"], done.result["format"]) == (60, fmt)
    assert not path.with_name(path.name + ".partial").exists()
    records = read_export(path, fmt)
    detections = await fetch(
        pool,
        "SELECT d.id FROM main_detection d JOIN main_sourceimage si ON si.id = d.source_image_id"
        " WHERE si.project_id = %s AND d.bbox IS NOT NULL ORDER BY d.id",
        seeded.project_id,
    )
    want = [r["id"] for r in detections]
    if fmt == "jsonl":
        assert [r["detection_id"] for r in records] == want
        firsts = [r for r in records if r["bbox"][0] == 10]
        assert {len(r["classifications"]) for r in firsts} == {2}
        assert all(r["classifications"] == [] for r in records if r["bbox"][0] == 20)
        assert firsts[0]["classifications"][0]["taxon"] == "Noctuidae"
        assert firsts[0]["classifications"][0]["algorithm"] == CLASSIFIER_KEY
        assert done.result["rows"] == 60
    else:
        assert len(records) == 90 == done.result["rows"]  # 2 rows + 1 row per image
        assert sorted({int(r["detection_id"]) for r in records}) == want
        assert {r["taxon"] for r in records} == {"Noctuidae", "Erebidae", ""}
    stages = {s.key: s for s in done.progress.stages}
    assert stages["exporting_data"].param("records_exported") == 60
    assert stages["exporting_data"].param("total_records") == 60
    assert stages["saving_file"].param("file_path") == str(path)
    assert stages["saving_file"].param("file_size") == file_size(path)
    assert all(s.status == JobState.SUCCESS and s.progress == 1.0 for s in stages.values())


async def test_export_of_a_collection_has_only_its_images(
    pool, temporal_client, settings, tmp_path
):
    settings = with_export(settings, tmp_path)
    job, seeded = await export_job(
        pool, temporal_client, settings, 20, slice(5), params={"format": "jsonl"}
    )
    ids = await project_images(pool, seeded.project_id)
    collection = job.collection_id
    await run_to_end(pool, temporal_client, settings, job.id)
    done = await get_job(pool, job.id)
    records = read_export(Path(done.result["path"]), "jsonl")
    assert {r["source_image_id"] for r in records} == set(ids[:5])
    assert len(records) == 10 and f"-collection-{collection}-" in done.result["path"]


_RECORDS = "coalesce(NEW.progress #>> '{stages,0,params,2,value}', '')"


def _hold_progress(settings: Settings, job_id: int, condition: str) -> DbHold:
    """The export's progress write (after a page) whose records_exported matches ``condition``."""
    return DbHold(settings, "jobs_job", "UPDATE", f"NEW.id = {job_id} AND {_RECORDS} {condition}")


async def _waiting_on_job_row(pool) -> bool:
    """A status write (antenna_db.job_store.transition) waits for a row lock of this session's jobs
    table (other sessions' backends are in other schemas)."""
    rows = await fetch(
        pool,
        "SELECT 1 FROM pg_stat_activity a WHERE a.wait_event_type = 'Lock'"
        # A row lock's wait (the held write itself waits on an advisory lock, and under load
        # the test once took that for the status write and released the hold too early).
        " AND a.wait_event IN ('transactionid', 'tuple')"
        " AND a.query LIKE 'UPDATE jobs_job SET progress = jsonb_set(progress,%%'"
        " AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid"
        "             AND l.relation = 'jobs_job'::regclass)",
    )
    return bool(rows)


@pytest.mark.parametrize("how", ["temporal", "signal"])
async def test_export_cancelled_mid_way_removes_the_partial_file(
    how, pool, temporal_client, settings, tmp_path
):
    # A heartbeat timeout far past the test's waits: in the cache-off session, replays on the
    # test's event loop (in-process workers) can hold the export's heartbeats back for seconds,
    # and an attempt timed out so is run again beside the first, whose held write then keeps the
    # job's row from the revoke until the test times out (seen twice in CI). Not what this
    # test is about: a lost worker's attempt is the crash tests'.
    settings = with_settings(
        with_export(settings, tmp_path, batch_size=10), jobs={"heartbeat_timeout": 15}
    )
    job, _ = await export_job(pool, temporal_client, settings, 50, params={"format": "csv"})
    # Page 1's progress write waits; then (CANCELING written meanwhile) the next page's waits,
    # until the cancel reaches the activity and cancels that statement. Only a write after
    # CANCELING is held: one that took the row first would hold up CANCELING itself, which waits
    # for the row before the workflow cancels the activity (a deadlock of the test's making).
    first = _hold_progress(settings, job.id, "= '10'")
    second = _hold_progress(settings, job.id, "NOT IN ('', '0', '10') AND OLD.status = 'CANCELING'")
    async with running_workers(temporal_client, settings), first, second:
        await JobActions(pool, temporal_client, settings).run(job.id)
        await first.wait_blocked()
        partial = list((tmp_path / "exports").glob("*.partial"))
        assert len(partial) == 1 and len(read_lines(partial[0])) > 1  # header + page 1
        if how == "temporal":  # `temporal workflow cancel` and the Web UI make this same call
            await job_handle(temporal_client, job.id).cancel()
        else:
            await job_handle(temporal_client, job.id).signal("cancel", "test")
        # The workflow writes CANCELING at once; it waits behind the held progress write.
        await eventually(lambda: _waiting_on_job_row(pool))
        await first.release()
        with pytest.raises(WorkflowFailureError) as raised:
            await job_handle(temporal_client, job.id).result()
        assert await second.waiting_pids() == []
    assert isinstance(raised.value.cause, CancelledError)
    done = await get_job(pool, job.id)
    assert done.status == JobState.REVOKED and done.result is None
    assert list((tmp_path / "exports").iterdir()) == []


_SAVING_FILE = (
    "jsonb_path_exists(NEW.progress,"
    ' \'$.stages[*] ? (@.key == "saving_file" && @.status == "STARTED")\')'
)


async def test_the_exports_last_write_heartbeats_while_it_waits_for_the_row(
    pool, temporal_client, settings, tmp_path
):
    """The export's last write (its file in place, the saving stage started) waiting for the
    job's row, as behind another writer: the activity keeps heartbeating (a cancel can reach it,
    it is not taken for a lost worker), then ends the job SUCCESS once the row is free. Before,
    it was past its heartbeats: a cancel that came then waited for ever behind it."""
    settings = with_export(settings, tmp_path, batch_size=10)
    job, _ = await export_job(pool, temporal_client, settings, 50, params={"format": "csv"})
    last = DbHold(settings, "jobs_job", "UPDATE", f"NEW.id = {job.id} AND {_SAVING_FILE}")
    handle = job_handle(temporal_client, job.id)

    async def export_heartbeat() -> float | None:
        """The export attempt's last heartbeat; an attempt after the first (the first timed out
        for want of heartbeats while it waited) fails the test."""
        pending = (await handle.describe()).raw_description.pending_activities
        for a in pending:
            if a.activity_type.name == "export_data":
                assert a.attempt == 1, "the waiting export was taken for lost and run again"
                if a.HasField("last_heartbeat_time"):
                    return float(a.last_heartbeat_time.ToNanoseconds())
        return None

    async with running_workers(temporal_client, settings), last:
        await JobActions(pool, temporal_client, settings).run(job.id)
        await last.wait_blocked()
        # Past the heartbeat timeout (5 s here) the same attempt is still beating.
        beats: set[float] = set()

        async def beating_on() -> bool:
            beat = await export_heartbeat()
            if beat is not None:
                beats.add(beat)
            return len(beats) >= 3 and max(beats) - min(beats) > 6e9

        await eventually(beating_on, within=30, interval=0.2)
        assert await last.waiting_pids()  # still waiting: the beats came from the wait
        await last.release()
        await handle.result()
    done = await get_job(pool, job.id)
    assert done.status == JobState.SUCCESS
    assert [p.name for p in (tmp_path / "exports").iterdir()] == [Path(done.result["path"]).name]


@pytest.mark.chaos
async def test_export_worker_killed_mid_way_resumes_from_its_checkpoint(
    pool, temporal_client, settings, tmp_path
):
    settings = with_export(settings, tmp_path, batch_size=10)
    job, _ = await export_job(pool, temporal_client, settings, 50, params={"format": "jsonl"})
    hold = _hold_progress(settings, job.id, "= '10'")
    with worker_processes(settings, tmp_path / "logs") as workers:
        async with hold:
            first = workers.start()
            await JobActions(pool, temporal_client, settings).run(job.id)
            await hold.wait_blocked()

            async def checkpointed() -> bool:
                details = await heartbeat_details(temporal_client, job.id, "export_data")
                return bool(details) and details["last_id"] > 0

            await eventually(checkpointed, within=30)
            first.kill()
            await hold.terminate_waiters()
        workers.start()
        result = await job_handle(temporal_client, job.id).result()
    assert result.status == JobState.SUCCESS
    done = await get_job(pool, job.id)
    records = read_export(Path(done.result["path"]), "jsonl")
    ids = [r["detection_id"] for r in records]
    assert len(ids) == 100 == len(set(ids)) and ids == sorted(ids)
    assert done.result["records"] == 100
    messages = [r["message"] for r in await job_logs(pool, job.id)]
    assert any("resumed after detection" in m for m in messages), messages


async def test_export_that_cannot_write_its_file_fails_with_the_reason(
    pool, temporal_client, settings, tmp_path
):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings = with_settings(settings, export=ExportSettings(dir=blocker / "exports"))
    job, _ = await export_job(pool, temporal_client, settings, 3, params={"format": "csv"})
    errors = await run_to_failure(pool, temporal_client, settings, job.id)
    assert any("cannot write the export file" in m for m in errors), errors


async def test_retry_of_a_revoked_export_runs_it_again(pool, temporal_client, settings, tmp_path):
    settings = with_export(settings, tmp_path)
    job, _ = await export_job(pool, temporal_client, settings, 4, params={"format": "csv"})
    actions = JobActions(pool, temporal_client, settings)
    assert (await actions.cancel(job.id)).status == JobState.REVOKED  # never started
    async with running_workers(temporal_client, settings):
        # Antenna's retry: RETRY, then its enqueue's PENDING at once.
        assert (await actions.retry(job.id)).status == JobState.PENDING
        result = await job_handle(temporal_client, job.id).result()
    assert result.status == JobState.SUCCESS
    done = await get_job(pool, job.id)
    assert done.result is not None and done.result["records"] == 8
    assert len(read_lines(Path(done.result["path"]))) == 1 + 12
