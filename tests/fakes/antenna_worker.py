"""A stand-in for Antenna's Celery worker: a real Celery app (run with ``celery -A
tests.fakes.antenna_worker worker``) that registers ``ami.jobs.tasks.run_job`` and writes the job
row, its progress stages and its log lines as Antenna's JobType.run does for each type
(docs/antenna-operations.md sections 1 and 2), over ``FAKE_ANTENNA_DURATION`` seconds.

As Antenna at 731cc2a2: acked on delivery (no acks_late), prefetch 1, task_prerun writes PENDING
(unguarded), the job type's run writes STARTED and the stages, task_postrun writes the task's
state (SUCCESS only when the progress is complete), task_failure writes FAILURE found by the
row's task_id. A key it does not know raises "Unknown job type", as Antenna's UnknownJobType.
Every run logs "Running job" and "Finished job" lines with its pid, so a test counts runs.

Environment: FAKE_ANTENNA_BROKER_URL, FAKE_ANTENNA_DB_URL, FAKE_ANTENNA_DB_SCHEMA,
FAKE_ANTENNA_DURATION (seconds, default 2).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import psycopg
from celery import Celery
from celery.signals import task_failure, task_postrun, task_prerun
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

app = Celery("antenna", broker=os.environ.get("FAKE_ANTENNA_BROKER_URL", "amqp://"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=False,
    worker_prefetch_multiplier=1,
    task_default_queue="antenna",
    broker_connection_retry_on_startup=True,
)

# key -> stages (key, name, params), as each JobType.run adds them.
STAGES: dict[str, list[tuple[str, str, list[str]]]] = {
    "regroup_events": [("regroup_events", "Regroup events", ["Events"])],
    "data_storage_sync": [
        ("data_storage_sync", "Data storage sync", ["Total files", "Failed"]),
        ("regroup_sessions", "Regroup sessions", []),
    ],
    "post_processing": [("post_processing", "Post-processing", ["Task"])],
    "data_export": [
        ("exporting_data", "Exporting data", ["Records exported"]),
        ("uploading_snapshot", "Uploading snapshot", ["File URL"]),
    ],
    "populate_captures_collection": [
        ("populate_captures_collection", "Populate captures collection", ["Captures added"])
    ],
    # A type Antenna has and antenna-jobs does not know (jobs/0024 added it).
    "train_classifier": [("train_classifier", "Train classifier", ["Epochs"])],
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _connect() -> psycopg.Connection[dict[str, Any]]:
    schema = os.environ["FAKE_ANTENNA_DB_SCHEMA"]
    return psycopg.connect(
        os.environ["FAKE_ANTENNA_DB_URL"],
        autocommit=True,
        row_factory=dict_row,
        options=f"-c search_path={schema},public",
    )


def _log(conn: psycopg.Connection[Any], job_id: int, message: str, level: str = "INFO") -> None:
    context = {"pid": os.getpid(), "fake_antenna": True}
    conn.execute(
        "INSERT INTO jobs_joblog (created_at, updated_at, level, message, context, job_id)"
        " VALUES (now(), now(), %s, %s, %s::jsonb, %s)",
        (level, message, json.dumps(context), job_id),
    )


def _save(
    conn: psycopg.Connection[Any], job_id: int, progress: dict[str, Any], **cols: Any
) -> None:
    """Job.save(): the whole progress, the summary from the stages, updated_at."""
    stages = progress["stages"]
    if stages:
        progress["summary"]["progress"] = sum(s["progress"] for s in stages) / len(stages)
    sets = ["progress = %s::jsonb", "updated_at = now()"] + [f"{c} = %s" for c in cols]
    conn.execute(
        f"UPDATE jobs_job SET {', '.join(sets)} WHERE id = %s",
        (json.dumps(progress), *cols.values(), job_id),
    )


def _status(conn: psycopg.Connection[Any], job_id: int, status: str) -> None:
    """Job.update_status(status): the column and the summary, unguarded."""
    conn.execute(
        "UPDATE jobs_job SET status = %s, progress = jsonb_set(progress, '{summary,status}',"
        " to_jsonb(%s::text)), updated_at = now() WHERE id = %s",
        (status, status, job_id),
    )


@app.task(name="ami.jobs.tasks.run_job", bind=True)
def run_job(self: Any, job_id: int) -> None:
    with _connect() as conn:
        job = conn.execute("SELECT * FROM jobs_job WHERE id = %s", (job_id,)).fetchone()
        if job is None:
            raise ValueError(f"Job {job_id} does not exist")
        _log(conn, job_id, f"Running job #{job_id} (task {self.request.id}, pid {os.getpid()})")
        kind = job["job_type_key"]
        if kind not in STAGES:
            raise ValueError(f"Unknown job type '{kind}'")
        progress = job["progress"] or {"summary": {}, "stages": []}
        progress.setdefault("summary", {})
        progress["stages"] = [
            {
                "key": key,
                "name": name,
                "status": "CREATED",
                "progress": 0.0,
                "params": [
                    {"name": p, "key": _key(p), "category": "default", "value": ""} for p in params
                ],
            }
            for key, name, params in STAGES[kind]
        ]
        _save(conn, job_id, progress, started_at=_now(conn), finished_at=None)
        _status(conn, job_id, "STARTED")
        progress = conn.execute(
            "SELECT progress FROM jobs_job WHERE id = %s", (job_id,)
        ).fetchone()["progress"]
        duration = float(os.environ.get("FAKE_ANTENNA_DURATION", "2"))
        steps = 10
        for stage in progress["stages"]:
            stage["status"] = "STARTED"
            for i in range(steps):
                time.sleep(duration / steps / len(progress["stages"]))
                stage["progress"] = (i + 1) / steps
                _save(conn, job_id, progress)
            stage["status"] = "SUCCESS"
            for param in stage["params"]:
                param["value"] = _final_value(conn, job, param["key"])
        result: dict[str, Any] | None = job["result"]
        if kind == "data_export":
            url = f"https://storage.example.org/exports/{self.request.id}.csv"
            result = {"file_url": url}
            if job["data_export_id"] is not None:
                conn.execute(
                    "UPDATE exports_dataexport SET file_url = %s, record_count = 3,"
                    " file_size = 123, updated_at = now() WHERE id = %s",
                    (url, job["data_export_id"]),
                )
        progress["summary"]["status"] = "SUCCESS"
        _save(
            conn,
            job_id,
            progress,
            finished_at=_now(conn),
            result=Jsonb(result) if result is not None else None,
        )
        _status(conn, job_id, "SUCCESS")
        _log(conn, job_id, f"Finished job #{job_id} (task {self.request.id}, pid {os.getpid()})")


def _now(conn: psycopg.Connection[Any]) -> Any:
    return conn.execute("SELECT now() AS t").fetchone()["t"]


def _final_value(conn: psycopg.Connection[Any], job: dict[str, Any], key: str) -> Any:
    if key == "captures_added" and job["source_image_collection_id"] is not None:
        row = conn.execute(
            "SELECT count(*) AS n FROM main_sourceimagecollection_images"
            " WHERE sourceimagecollection_id = %s",
            (job["source_image_collection_id"],),
        ).fetchone()
        return row["n"]
    if key == "task":
        return (job["params"] or {}).get("task", "")
    if key == "file_url":
        return "uploaded"
    return 1


def _job_id(task: Any, args: Any, kwargs: Any) -> int | None:
    found = (kwargs or {}).get("job_id")
    if found is None and args:
        found = args[0]
    return int(found) if found is not None else None


@task_prerun.connect(sender=run_job)
def pre_update_job_status(
    task_id: str, task: Any, args: Any = None, kwargs: Any = None, **_: Any
) -> None:
    job_id = _job_id(task, args, kwargs)
    if job_id is not None:
        with _connect() as conn:
            _status(conn, job_id, "PENDING")


@task_postrun.connect(sender=run_job)
def update_job_status(
    task_id: str, task: Any, args: Any = None, kwargs: Any = None, state: str = "", **_: Any
) -> None:
    job_id = _job_id(task, args, kwargs)
    if job_id is None or state not in {"SUCCESS", "FAILURE", "REVOKED", "RETRY"}:
        return
    with _connect() as conn:
        if state == "SUCCESS":
            row = conn.execute("SELECT progress FROM jobs_job WHERE id = %s", (job_id,)).fetchone()
            stages = (row or {}).get("progress", {}).get("stages", [])
            if not stages or any(s["status"] != "SUCCESS" for s in stages):
                return  # deferred: not complete
        _status(conn, job_id, state)


@task_failure.connect(sender=run_job)
def update_job_failure(task_id: str, exception: BaseException, **_: Any) -> None:
    with _connect() as conn:
        row = conn.execute("SELECT id FROM jobs_job WHERE task_id = %s", (task_id,)).fetchone()
        if row is None:
            return
        conn.execute(
            "UPDATE jobs_job SET status = 'FAILURE', progress = jsonb_set(progress,"
            " '{summary,status}', '\"FAILURE\"'), finished_at = now(), updated_at = now()"
            " WHERE id = %s AND status IN ('CREATED', 'PENDING', 'STARTED', 'RETRY')",
            (row["id"],),
        )
        _log(conn, row["id"], f"Job #{row['id']} failed: {exception}", level="ERROR")
