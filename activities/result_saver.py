"""Save one batch of posted results: claim inbox rows, record them, delete them, in ONE transaction.

Images move pending -> processed/failed only where still pending, and results are saved only
for the images that this transaction moved, so a redelivered or duplicated result saves nothing
and counts nothing. A row the database refuses (or that our code cannot handle) never blocks
the others: the batch is retried row by row, each in a savepoint; a row that still fails is
kept for a later batch, and after ``max_attempts`` its image is failed with the reason.
Connection loss and other outages are raised instead (the activity retries them), and so is a
save refused because Antenna's schema changed (``SchemaBlocked``: no row is at fault, nothing is
counted against any row, the whole transaction rolls back and the rows stay in the inbox).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pydantic import ValidationError

from antenna_db import results
from antenna_db.pipelines import PipelineContext
from antenna_db.results import ClassificationSpec, DetectionSpec
from antenna_db.schema_check import SchemaFault, schema_reason
from core import tracing
from core.result_payload import LightDetection, LightResult, image_id, images_named, is_error
from core.schemas import PipelineResultsError
from storage import inbox, job_images, job_runs
from storage.inbox import ClaimedRow

Resolver = Callable[[str], Awaitable[int | None]]
MAX_ATTEMPTS = 3


@dataclass
class ParsedResults:
    processed: dict[int, list[DetectionSpec]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    # The failures a processing worker reported (its error results), with its error: Antenna
    # logs each as an ERROR of the job.
    errors: dict[int, str] = field(default_factory=dict)


@dataclass
class BatchOutcome:
    claimed: int = 0
    processed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    detections: int = 0
    classifications: int = 0
    # Rows that could not be saved and were failed, with the reason (for the job log), by the
    # image failed; ``refused_rows`` by inbox row id, for a row that names no image.
    refused: dict[int, str] = field(default_factory=dict)
    refused_rows: dict[int, str] = field(default_factory=dict)
    # Images this batch failed because the worker returned an error for them, with the error.
    errors: dict[int, str] = field(default_factory=dict)
    need_crops: list[int] = field(default_factory=list)
    tables: set[str] = field(default_factory=set)

    def refusals(self) -> list[tuple[str, str]]:
        """(what was refused, why), for the job log."""
        return [(f"image {i}", reason) for i, reason in self.refused.items()] + [
            (f"result row {i}", reason) for i, reason in self.refused_rows.items()
        ]

    @property
    def moved(self) -> int:
        return len(self.processed) + len(self.failed)

    def add(self, other: BatchOutcome) -> None:
        self.processed += other.processed
        self.failed += other.failed
        self.detections += other.detections
        self.classifications += other.classifications
        self.refused |= other.refused
        self.refused_rows |= other.refused_rows
        self.errors |= other.errors
        self.need_crops += other.need_crops
        self.tables |= other.tables


def unknown_algorithm(
    detections: Iterable[LightDetection], pipeline: PipelineContext
) -> str | None:
    for det in detections:
        keys = [det.algorithm.key] + [c.algorithm.key for c in det.classifications]
        for key in keys:
            if key not in pipeline.algorithms:
                return f"algorithm {key!r} is not registered for pipeline {pipeline.slug!r}"
    return None


def _box(det: LightDetection) -> tuple[float, float, float, float] | None:
    b = det.bbox
    return (b.x1, b.y1, b.x2, b.y2) if b is not None else None


def _specs(
    row_id: int, indexed: list[tuple[int, LightDetection]], pipeline: PipelineContext
) -> list[DetectionSpec]:
    return [
        DetectionSpec(
            inbox_id=row_id,
            det_index=i,
            bbox=_box(det),
            algorithm_id=pipeline.algorithms[det.algorithm.key].id,
            detection_time=det.timestamp,
            crop_path=results.crop_path(det.crop_image_url),
            classifications=tuple(
                ClassificationSpec(
                    inbox_id=row_id,
                    det_index=i,
                    cls_index=j,
                    label=c.classification,
                    algorithm_id=pipeline.algorithms[c.algorithm.key].id,
                    terminal=c.terminal,
                    timestamp=c.timestamp,
                )
                for j, c in enumerate(det.classifications)
            ),
        )
        for i, det in indexed
    ]


def add_response(
    parsed: ParsedResults, row_id: int, result: LightResult, pipeline: PipelineContext
) -> None:
    """One success result's images into ``parsed`` (also SYNC_API's /process answers): the
    first success of an image wins; an algorithm the pipeline lacks fails that image. The
    algorithms are the job's pipeline's (Antenna looks the pipeline up by the result's slug,
    which the ADC copies from the job listing: the same one)."""
    by_image: dict[int, list[tuple[int, LightDetection]]] = {}
    for source in result.source_images:
        image = image_id(source.id)
        if image is not None:
            by_image.setdefault(image, [])
    for i, det in enumerate(result.detections):
        image = image_id(det.source_image_id)
        if image is not None:
            by_image.setdefault(image, []).append((i, det))
    for image, indexed in by_image.items():
        if image in parsed.processed:
            continue
        reason = unknown_algorithm((d for _, d in indexed), pipeline)
        if reason is None and any(c.n_scores == 0 for _, d in indexed for c in d.classifications):
            reason = "a classification has no scores"
        if reason:
            parsed.failed.setdefault(image, reason)
        else:
            parsed.processed[image] = _specs(row_id, indexed, pipeline)


def parse_results(
    rows: list[ClaimedRow], pipeline: PipelineContext, resolved: dict[int, int]
) -> ParsedResults:
    """Claimed rows -> per-image outcomes. A success anywhere in the batch beats an error for
    the same image."""
    parsed = ParsedResults()
    for row in rows:
        if _is_error(row):
            try:
                error = PipelineResultsError.model_validate(row.light)
                message, image = error.error, image_id(error.image_id)
            except ValidationError:
                message, image = f"unreadable error result: {row.light!r:.200}", None
            image = image or row.image_id or resolved.get(row.id)
            if image is not None:
                parsed.failed.setdefault(image, message)
                if row.reply_subject:  # posted by a worker (not our own no-URL entry)
                    parsed.errors.setdefault(image, message)
            continue
        try:
            result = LightResult.model_validate(row.light)
        except ValidationError as err:
            if row.image_id is not None:
                parsed.failed.setdefault(row.image_id, f"invalid result: {err.errors()[:1]}")
            continue
        add_response(parsed, row.id, result, pipeline)
    for image in parsed.processed:
        parsed.failed.pop(image, None)
        parsed.errors.pop(image, None)
    return parsed


def _images_of(row: ClaimedRow) -> list[int]:
    """Every image a row speaks of: its own and those its result names."""
    found = images_named(row.light) | ({row.image_id} if row.image_id is not None else set())
    return sorted(found)


def _is_error(row: ClaimedRow) -> bool:
    """Stored as one (the API found an ``error`` key), or an error result all the same."""
    return row.is_error or is_error(row.light)


def unnamed_errors(rows: list[ClaimedRow]) -> list[ClaimedRow]:
    """Error rows that name no image: their image must come from the reply subject."""
    return [
        r
        for r in rows
        if _is_error(r) and r.image_id is None and image_id(r.light.get("image_id")) is None
    ]


async def record_parsed(
    conn: psycopg.AsyncConnection[Any],
    job_id: int,
    project_id: int,
    pipeline: PipelineContext,
    parsed: ParsedResults,
) -> BatchOutcome:
    """Record per-image outcomes inside the caller's transaction: only images still pending
    move, only those moved to processed get results saved, and the run's counters follow."""
    outcome = BatchOutcome()
    outcome.processed = await job_images.mark_processed(conn, job_id, parsed.processed)
    outcome.failed = await job_images.mark_failed(conn, job_id, parsed.failed)
    # Only images this transaction moved: a redelivered error result is not reported twice.
    outcome.errors = {i: parsed.errors[i] for i in outcome.failed if i in parsed.errors}
    if outcome.processed:
        saved = await results.save(
            conn, project_id, pipeline, {i: parsed.processed[i] for i in outcome.processed}
        )
        outcome.detections, outcome.classifications = saved.detections, saved.classifications
        outcome.need_crops, outcome.tables = saved.need_crops, saved.tables
    if outcome.moved:
        await job_runs.add(
            conn,
            job_id,
            processed=len(outcome.processed),
            failed=len(outcome.failed),
            detections=outcome.detections,
            classifications=outcome.classifications,
        )
    return outcome


def _outage(err: BaseException) -> bool:
    """Errors a retry of the whole activity can fix (the row is not at fault)."""
    return isinstance(err, psycopg.OperationalError | psycopg.InterfaceError)


class SchemaBlocked(Exception):
    """A save refused because Antenna's schema changed under us: the batch waits in the inbox
    until the schema is compatible again."""

    def __init__(self, fault: SchemaFault) -> None:
        super().__init__(fault.describe())
        self.fault = fault


def _not_the_rows(err: Exception) -> None:
    """Raise what is no row's fault: an outage as it is, a schema change as SchemaBlocked."""
    if _outage(err):
        raise err
    fault = schema_reason(err)
    if fault is not None:
        raise SchemaBlocked(fault) from err


class BatchSaver:
    """Saves batches of one job's inbox rows (the aggregator's, and SYNC_API's own rows)."""

    def __init__(
        self,
        job_id: int,
        project_id: int,
        pipeline: PipelineContext,
        resolve: Resolver,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.job_id = job_id
        self.project_id = project_id
        self.pipeline = pipeline
        self.resolve = resolve
        self.max_attempts = max_attempts

    async def save_batch(
        self,
        conn: psycopg.AsyncConnection[Any],
        limit: int,
        extra_failures: dict[int, str] | None = None,
        *,
        ids: list[int] | None = None,
    ) -> BatchOutcome:
        """Claim up to ``limit`` inbox rows of the job (or exactly ``ids``) and record them,
        with reconciled failures, in the caller's transaction. Traced as a child of the
        activity's span (core/tracing.py), naming the inbox rows it saved: the /result/ span
        that stored them names the same ids."""
        attributes = tracing.job_attributes(self.job_id, self.project_id, self.pipeline.slug)
        with tracing.span("antenna_jobs.results.save_batch", attributes) as span:
            outcome = await self._save_batch(conn, limit, extra_failures, ids)
            span.set_attributes(
                {
                    "antenna_jobs.claimed": outcome.claimed,
                    "antenna_jobs.processed": len(outcome.processed),
                    "antenna_jobs.failed": len(outcome.failed),
                }
            )
            return outcome

    async def _save_batch(
        self,
        conn: psycopg.AsyncConnection[Any],
        limit: int,
        extra_failures: dict[int, str] | None,
        ids: list[int] | None,
    ) -> BatchOutcome:
        rows = await inbox.claim(conn, self.job_id, limit, ids=ids)
        tracing.tag({"antenna_jobs.inbox_row_ids": [r.id for r in rows]})
        outcome = BatchOutcome(claimed=len(rows))
        if not rows and not extra_failures:
            return outcome
        fresh = [r for r in rows if r.attempts == 0]
        retried = [r for r in rows if r.attempts > 0]
        if fresh or extra_failures:
            try:
                async with conn.transaction():
                    outcome.add(await self._record(conn, fresh, extra_failures or {}))
                await inbox.delete(conn, [r.id for r in fresh])
            except Exception as err:
                _not_the_rows(err)
                if extra_failures:
                    async with conn.transaction():
                        outcome.add(await self._record(conn, [], extra_failures))
                retried = fresh + retried
        for row in retried:
            outcome.add(await self._one(conn, row))
        return outcome

    async def _record(
        self,
        conn: psycopg.AsyncConnection[Any],
        rows: list[ClaimedRow],
        extra_failures: dict[int, str],
    ) -> BatchOutcome:
        resolved: dict[int, int] = {}
        for row in unnamed_errors(rows):
            image = await self.resolve(row.reply_subject)
            if image is not None:
                resolved[row.id] = image
        parsed = parse_results(rows, self.pipeline, resolved)
        for image, error in extra_failures.items():
            if image not in parsed.processed:
                parsed.failed.setdefault(image, error)
        return await record_parsed(conn, self.job_id, self.project_id, self.pipeline, parsed)

    async def _one(self, conn: psycopg.AsyncConnection[Any], row: ClaimedRow) -> BatchOutcome:
        """One row on its own (in a savepoint); on failure count the attempt, and past the
        bound fail its image with the reason and drop the row."""
        try:
            async with conn.transaction():
                outcome = await self._record(conn, [row], {})
            await inbox.delete(conn, [row.id])
            return outcome
        except Exception as err:
            _not_the_rows(err)
            reason = f"{type(err).__name__}: {err}".strip()
        attempts = await inbox.record_failure(conn, row.id, reason)
        outcome = BatchOutcome()
        if attempts < self.max_attempts:
            return outcome
        images = _images_of(row)
        if not images and row.reply_subject:
            found = await self.resolve(row.reply_subject)
            images = [found] if found is not None else []
        message = f"result could not be saved after {attempts} attempts: {reason}"
        if images:
            async with conn.transaction():
                outcome = await record_parsed(
                    conn,
                    self.job_id,
                    self.project_id,
                    self.pipeline,
                    ParsedResults(failed=dict.fromkeys(images, message)),
                )
            outcome.refused |= dict.fromkeys(images, message)
        else:
            outcome.refused_rows[row.id] = message
        await inbox.delete(conn, [row.id])
        return outcome
