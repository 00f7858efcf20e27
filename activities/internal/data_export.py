"""data_export: stream a project's (or one collection's) detections and their classifications
to a CSV or JSON Lines file in the export directory, never holding the export in memory.

A server-side cursor (in one transaction: one consistent snapshot) is read ``batch_size`` rows
at a time in detection id order and each batch is appended to ``<file>.partial`` and flushed;
the heartbeat details then record (last detection id, bytes), so a retried attempt truncates the
partial file to that size and continues after that id. The finished file is fsynced and renamed
into place; its path and size become the job's result. A cancel removes the partial file here,
and the workflow's cleanup (remove_export) removes whatever a killed attempt left.

CSV: one row per classification (detection columns repeated; a detection without any has one
row with empty classification columns). JSON Lines: one object per detection, classifications
nested. Null-bbox "nothing found" markers are not detections and are not exported.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from pathlib import Path
from typing import IO, Any

import psycopg
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating, resume_details
from activities.internal.models import ExportCheckpoint, InternalResult, RemoveExportInput
from activities.jobs import PoolActivities, RowCancelCheck
from activities.models import JobRef
from antenna_db import exports, job_store
from antenna_db.job_store import JobRecord
from core.errors import Failure, failure
from core.job_params import ExportFormat, export_params
from core.progress import JobProgress
from core.settings import Settings
from core.states import JobState
from storage.pool import Pool

DETECTION_COLUMNS = [
    "detection_id",
    "source_image_id",
    "source_image_url",
    "source_image_timestamp",
    "deployment_id",
    "occurrence_id",
    "algorithm",
    "bbox_x1",
    "bbox_y1",
    "bbox_x2",
    "bbox_y2",
    "timestamp",
    "crop_image_url",
]
CLASSIFICATION_COLUMNS = ["classification_id", "taxon", "algorithm", "score", "terminal"]
CSV_HEADER = [
    *DETECTION_COLUMNS,
    "classification_id",
    "taxon",
    "classification_algorithm",
    "score",
    "terminal",
]


def export_path(directory: Path, job: JobRecord, fmt: ExportFormat) -> Path:
    scope = f"-collection-{job.collection_id}" if job.collection_id else ""
    return directory / f"project-{job.project_id}{scope}-job-{job.id}.{fmt.value}"


def partial_path(final: Path) -> Path:
    return final.with_name(final.name + ".partial")


def csv_rows(record: dict[str, Any]) -> list[list[Any]]:
    bbox = record["bbox"] or [None] * 4
    base = [
        record["detection_id"],
        record["source_image_id"],
        record["source_image_url"],
        record["source_image_timestamp"],
        record["deployment_id"],
        record["occurrence_id"],
        record["algorithm"],
        *bbox,
        record["timestamp"],
        record["crop_image_url"],
    ]
    classifications = record["classifications"] or [{}]
    return [base + [c.get(k) for k in CLASSIFICATION_COLUMNS] for c in classifications]


def encode_page(fmt: ExportFormat, records: list[str]) -> tuple[bytes, int]:
    """(bytes to append, rows written) for one page of JSON records from the database."""
    if fmt == ExportFormat.JSONL:
        return "".join(r + "\n" for r in records).encode(), len(records)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    rows = 0
    for raw in records:
        for row in csv_rows(json.loads(raw)):
            writer.writerow(row)
            rows += 1
    return buffer.getvalue().encode(), rows


def csv_header() -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(CSV_HEADER)
    return buffer.getvalue().encode()


def open_partial(path: Path, state: ExportCheckpoint, fmt: ExportFormat) -> IO[bytes]:
    """The partial file positioned at the checkpoint; a fresh one when it cannot resume."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if state.bytes and path.exists() and path.stat().st_size >= state.bytes:
        resumed = path.open("r+b")
        resumed.truncate(state.bytes)
        resumed.seek(state.bytes)
        return resumed
    fresh = path.open("wb")
    if fmt == ExportFormat.CSV:
        fresh.write(csv_header())
    return fresh


def publish_file(file: IO[bytes], partial: Path, final: Path) -> int:
    """Make the finished file durable and move it into place; returns its size."""
    file.flush()
    os.fsync(file.fileno())
    file.close()
    os.replace(partial, final)
    return final.stat().st_size


def _file_error(err: OSError) -> ApplicationError:
    """A file the worker cannot write (permissions, a full disk, a bad export directory) fails
    the job with the reason instead of retrying forever; database errors stay retryable."""
    return failure(Failure.EXPORT_FAILED, f"cannot write the export file: {err}")


async def export_format(conn: psycopg.AsyncConnection[Any], job: JobRecord) -> ExportFormat:
    """Our params' format; for a job Antenna made (no params), its export row's format (its
    ``*_csv`` formats as CSV, the others as JSON Lines)."""
    if not job.params and job.data_export_id is not None:
        named = await exports.format_of(conn, job.data_export_id) or ""
        return ExportFormat.CSV if "csv" in named.lower() else ExportFormat.JSONL
    try:
        return export_params(job.params or {}).format
    except ValidationError as err:
        raise failure(
            Failure.EXPORT_FAILED, f"invalid params {job.params}: {err.errors()[:1]}"
        ) from err


def file_url(base: str | None, path: Path) -> str:
    return f"{base.rstrip('/')}/{path.name}" if base else path.as_uri()


class ExportActivities(PoolActivities):
    def __init__(self, pool: Pool, settings: Settings) -> None:
        super().__init__(pool, settings)
        # Absolute once, so the job's result names the file whatever the reader's directory.
        self._dir = settings.export.dir.resolve()

    @activity.defn(name="export_data")
    async def export_data(self, ref: JobRef) -> InternalResult:
        return await _Export(self._pool, self._settings, self._dir, ref.job_id).run()

    @activity.defn(name="remove_export")
    async def remove_export(self, inp: RemoveExportInput) -> None:
        """Remove what a stopped export left (the partial file; the file too unless kept)."""
        async with self._pool.connection() as conn:
            job = await job_store.get_job(conn, inp.job_id)
            final = export_path(self._dir, job, await export_format(conn, job))
        targets = [partial_path(final)] + ([] if inp.keep_final else [final])
        for path in targets:
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as err:
                # Best effort: a file that cannot go must not keep the job from ending.
                async with self._pool.connection() as conn:
                    await job_store.append_log(
                        conn, inp.job_id, f"Could not remove {path}: {err}", level="WARNING"
                    )


class _Export:
    """One attempt of export_data."""

    def __init__(self, pool: Pool, settings: Settings, directory: Path, job_id: int) -> None:
        self.pool = pool
        self.dir = directory
        self.job_id = job_id
        self.jobs = settings.jobs
        self.export = settings.export
        self.progress = JobProgress()
        self.export_id: int | None = None
        self.last_progress = 0.0
        self._check_job = RowCancelCheck(
            pool, job_id, self.jobs.heartbeat_interval, first_now=False
        )

    async def run(self) -> InternalResult:
        async with self.pool.connection() as conn:
            job = await job_store.get_job(conn, self.job_id)
            fmt = await export_format(conn, job)
        self.export_id = job.data_export_id
        final = export_path(self.dir, job, fmt)
        partial = partial_path(final)
        query = {"project": job.project_id, "collection": job.collection_id}
        state = resume_details(ExportCheckpoint) or ExportCheckpoint()
        try:
            file = open_partial(partial, state, fmt)
        except OSError as err:
            raise _file_error(err) from err
        if file.tell() != state.bytes or not state.bytes:
            state = ExportCheckpoint(bytes=file.tell())
        resumed = state.last_id
        self.progress = job.progress.model_copy(deep=True)
        # Every statement heartbeats, the last writes too: one waiting for the job's row (a
        # status write, a lock) still hears a cancel, and a long one is not taken for a lost
        # worker and run again beside this attempt.
        async with heartbeating(self.jobs.heartbeat_interval, lambda: state):
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    # One snapshot for the count and every page.
                    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    if not state.total:
                        total = await exports.count(conn, job.project_id, job.collection_id)
                        state = state.model_copy(update={"total": total})
                    await self._write_progress(state, fmt, force=True)
                    async with conn.cursor(name=f"export_job_{self.job_id}") as cursor:
                        await cursor.execute(exports.PAGE, {**query, "after": state.last_id})
                        while page := await cursor.fetchmany(self.export.batch_size):
                            data, rows = encode_page(fmt, [r["record"] for r in page])
                            file.write(data)
                            file.flush()
                            state = ExportCheckpoint(
                                last_id=page[-1]["id"],
                                records=state.records + len(page),
                                rows=state.rows + rows,
                                bytes=state.bytes + len(data),
                                total=state.total,
                            )
                            await self._write_progress(state, fmt)
                            await self._check_job()
                size = publish_file(file, partial, final)
            except BaseException as err:
                # Cancelled or failed: no partial file stays behind. (A killed worker runs no
                # code at all: its partial file is what the next attempt resumes from.)
                file.close()
                with contextlib.suppress(OSError):
                    partial.unlink()
                if isinstance(err, OSError):
                    raise _file_error(err) from err
                raise
            await self._saved(final, size, state)
        return InternalResult(
            result={
                "path": str(final),
                "size": size,
                "format": fmt.value,
                "records": state.records,
                "rows": state.rows,
                "project_id": job.project_id,
                "collection_id": job.collection_id,
            },
            summary=f"Exported {state.records} detections ({state.rows} rows, {size} bytes)"
            f" to {final}" + (f", resumed after detection {resumed}" if resumed else ""),
        )

    async def _write_progress(
        self, state: ExportCheckpoint, fmt: ExportFormat, *, force: bool = False
    ) -> None:
        now = time.monotonic()
        if not force and now - self.last_progress < self.jobs.progress_interval.total_seconds():
            return
        share = state.records / state.total if state.total else 1.0
        self.progress.update_stage(
            "exporting_data",
            status=JobState.STARTED,
            progress=share,
            format=fmt.value,
            total_records=state.total,
            records_exported=state.records,
        )
        async with self.pool.connection() as conn:
            await job_store.save_progress(conn, self.job_id, self.progress)
        self.last_progress = now

    async def _saved(self, final: Path, size: int, state: ExportCheckpoint) -> None:
        self.progress.update_stage(
            "exporting_data",
            progress=1.0,
            total_records=state.total,
            records_exported=state.records,
        )
        self.progress.update_stage(
            "saving_file",
            status=JobState.STARTED,
            progress=1.0,
            file_path=str(final),
            file_size=size,
        )
        async with self.pool.connection() as conn:
            await job_store.save_progress(conn, self.job_id, self.progress)
            if self.export_id is not None:
                await exports.finish(
                    conn,
                    self.export_id,
                    file_url=file_url(self.export.url_base, final),
                    records=state.records,
                    size=size,
                )
