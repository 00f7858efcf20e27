"""Save one batch of posted results: claim inbox rows, record them, delete them, in ONE transaction.

job_images moves pending -> processed/failed only where it is still pending, and detections are
inserted only for the images that this statement moved, so a redelivered or duplicated result
saves nothing and counts nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pydantic import ValidationError

from core.schemas import DetectionResponse, PipelineResultsError, PipelineResultsResponse

Resolver = Callable[[str], Awaitable[int | None]]

_CLAIM = (
    "SELECT id, image_id, reply_subject, is_error, payload FROM result_inbox"
    " WHERE job_id = %s ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
)
_MARK_PROCESSED = (
    "UPDATE job_images SET status = 'processed', updated_at = now()"
    " WHERE job_id = %s AND source_image_id = ANY(%s::bigint[]) AND status = 'pending'"
    " RETURNING source_image_id"
)
_MARK_FAILED = (
    "UPDATE job_images ji SET status = 'failed', error = f.error, updated_at = now()"
    " FROM unnest(%s::bigint[], %s::text[]) AS f(image_id, error)"
    " WHERE ji.job_id = %s AND ji.source_image_id = f.image_id AND ji.status = 'pending'"
    " RETURNING ji.source_image_id"
)
_DETECTION_COLUMNS = (
    "id, source_image_id, job_id, algorithm_id, bbox_x1, bbox_y1, bbox_x2, bbox_y2,"
    " inference_time, timestamp, crop_image_url"
)
_CLASSIFICATION_COLUMNS = (
    "detection_id, algorithm_id, taxon, labels, scores, logits, inference_time, terminal, timestamp"
)


@dataclass(frozen=True)
class PipelineContext:
    """The job's pipeline: which algorithm keys it may report, and its detector for markers."""

    slug: str
    algorithms: dict[str, int]
    detector_id: int | None


@dataclass
class ParsedResults:
    processed: dict[int, list[DetectionResponse]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


@dataclass
class BatchOutcome:
    claimed: int = 0
    processed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    detections: int = 0
    classifications: int = 0

    @property
    def moved(self) -> int:
        return len(self.processed) + len(self.failed)


def unknown_algorithm(
    detections: Iterable[DetectionResponse], pipeline: PipelineContext
) -> str | None:
    for det in detections:
        keys = [det.algorithm.key] + [c.algorithm.key for c in det.classifications]
        for key in keys:
            if key not in pipeline.algorithms:
                return f"algorithm {key!r} is not registered for pipeline {pipeline.slug!r}"
    return None


def _int_id(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_results(
    rows: list[dict[str, Any]], pipeline: PipelineContext, resolved: dict[int, int]
) -> ParsedResults:
    """Turn claimed inbox rows into per-image outcomes. The first success result of an image wins;
    a success anywhere in the batch beats an error for the same image."""
    parsed = ParsedResults()
    for row in rows:
        payload = row["payload"]
        if row["is_error"] or "error" in payload:
            try:
                error = PipelineResultsError.model_validate(payload)
                message, image = error.error, _int_id(error.image_id)
            except ValidationError:
                message, image = f"unreadable error result: {payload!r:.200}", None
            image = image or row["image_id"] or resolved.get(row["id"])
            if image is not None:
                parsed.failed.setdefault(image, message)
            continue
        try:
            result = PipelineResultsResponse.model_validate(payload)
        except ValidationError as err:
            if row["image_id"] is not None:
                parsed.failed.setdefault(row["image_id"], f"invalid result: {err.errors()[:1]}")
            continue
        add_response(parsed, result, pipeline)
    for image in parsed.processed:
        parsed.failed.pop(image, None)
    return parsed


def add_response(
    parsed: ParsedResults, result: PipelineResultsResponse, pipeline: PipelineContext
) -> None:
    """One success result's images into ``parsed`` (also SYNC_API's /process answers): the
    first success of an image wins; an algorithm the pipeline lacks fails that image."""
    by_image: dict[int, list[DetectionResponse]] = {}
    for source in result.source_images:
        image = _int_id(source.id)
        if image is not None:
            by_image.setdefault(image, [])
    for det in result.detections:
        image = _int_id(det.source_image_id)
        if image is not None:
            by_image.setdefault(image, []).append(det)
    for image, detections in by_image.items():
        if image in parsed.processed:
            continue
        problem = unknown_algorithm(detections, pipeline)
        if problem:
            parsed.failed.setdefault(image, problem)
        else:
            parsed.processed[image] = detections


def unnamed_errors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Error rows that name no image: their image must come from the reply subject."""
    return [
        r
        for r in rows
        if (r["is_error"] or "error" in r["payload"])
        and r["image_id"] is None
        and _int_id(r["payload"].get("image_id")) is None
    ]


async def save_batch(
    conn: psycopg.AsyncConnection[Any],
    job_id: int,
    pipeline: PipelineContext,
    limit: int,
    resolve: Resolver,
    extra_failures: dict[int, str] | None = None,
) -> BatchOutcome:
    """Claim up to ``limit`` inbox rows of the job and record them (plus reconciled failures)."""
    outcome = BatchOutcome()
    async with conn.transaction():
        cur = await conn.execute(_CLAIM, (job_id, limit))
        rows = list(await cur.fetchall())
        outcome.claimed = len(rows)
        if not rows and not extra_failures:
            return outcome
        resolved: dict[int, int] = {}
        for row in unnamed_errors(rows):
            image = await resolve(row["reply_subject"])
            if image is not None:
                resolved[row["id"]] = image
        parsed = parse_results(rows, pipeline, resolved)
        for image, error in (extra_failures or {}).items():
            if image not in parsed.processed:
                parsed.failed.setdefault(image, error)
        recorded = await record_parsed(conn, job_id, pipeline, parsed)
        outcome.processed, outcome.failed = recorded.processed, recorded.failed
        outcome.detections, outcome.classifications = (
            recorded.detections,
            recorded.classifications,
        )
        if rows:
            await conn.execute(
                "DELETE FROM result_inbox WHERE id = ANY(%s::bigint[])", ([r["id"] for r in rows],)
            )
    return outcome


async def record_parsed(
    conn: psycopg.AsyncConnection[Any],
    job_id: int,
    pipeline: PipelineContext,
    parsed: ParsedResults,
) -> BatchOutcome:
    """Record per-image outcomes inside the caller's transaction: only images still pending
    move, and only the ones that moved to processed get detections (so a replay saves nothing).
    """
    outcome = BatchOutcome()
    if parsed.processed:
        cur = await conn.execute(_MARK_PROCESSED, (job_id, list(parsed.processed)))
        outcome.processed = [r["source_image_id"] for r in await cur.fetchall()]
    if parsed.failed:
        cur = await conn.execute(
            _MARK_FAILED, (list(parsed.failed), list(parsed.failed.values()), job_id)
        )
        outcome.failed = [r["source_image_id"] for r in await cur.fetchall()]
    if outcome.processed:
        new = {image: parsed.processed[image] for image in outcome.processed}
        outcome.detections, outcome.classifications = await _insert_results(
            conn, job_id, pipeline, new
        )
    return outcome


async def _insert_results(
    conn: psycopg.AsyncConnection[Any],
    job_id: int,
    pipeline: PipelineContext,
    results: dict[int, list[DetectionResponse]],
) -> tuple[int, int]:
    """COPY the detections (with pre-allocated ids) and their classifications.

    Returns (detections, classifications); null-bbox markers are not counted as detections.
    """
    markers = [image for image, dets in results.items() if not dets]
    count = sum(len(d) for d in results.values()) + (len(markers) if pipeline.detector_id else 0)
    if count == 0:
        return 0, 0
    cur = await conn.execute(
        "SELECT nextval(pg_get_serial_sequence('detections', 'id')) AS id"
        " FROM generate_series(1, %s)",
        (count,),
    )
    ids = iter([r["id"] for r in await cur.fetchall()])
    detections: list[tuple[Any, ...]] = []
    classifications: list[tuple[Any, ...]] = []
    real = 0
    for image, dets in results.items():
        for det in dets:
            det_id = next(ids)
            box = det.bbox
            real += box is not None
            detections.append(
                (
                    det_id,
                    image,
                    job_id,
                    pipeline.algorithms[det.algorithm.key],
                    *((box.x1, box.y1, box.x2, box.y2) if box else (None,) * 4),
                    det.inference_time,
                    det.timestamp,
                    det.crop_image_url,
                )
            )
            for c in det.classifications:
                classifications.append(
                    (
                        det_id,
                        pipeline.algorithms[c.algorithm.key],
                        c.classification,
                        c.labels,
                        c.scores,
                        c.logits,
                        c.inference_time,
                        c.terminal,
                        c.timestamp,
                    )
                )
    if pipeline.detector_id is not None:
        for image in markers:
            detections.append(
                (next(ids), image, job_id, pipeline.detector_id, *(None,) * 4, None, None, None)
            )
    async with conn.cursor() as cur2:
        async with cur2.copy(f"COPY detections ({_DETECTION_COLUMNS}) FROM STDIN") as copy:
            for row in detections:
                await copy.write_row(row)
        if classifications:
            async with cur2.copy(
                f"COPY classifications ({_CLASSIFICATION_COLUMNS}) FROM STDIN"
            ) as copy:
                for row in classifications:
                    await copy.write_row(row)
    return real, len(classifications)
