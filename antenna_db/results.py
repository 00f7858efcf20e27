"""Saving results as Antenna's ``save_results`` does (docs/antenna-db.md section 1), set-based
and inside the caller's transaction, so a batch is saved whole or not at all.

For the images a batch moved from pending (never for a replay: the caller only passes those):
detections (bbox as ``[x1, y1, x2, y2]``, reusing a committed row of the same capture and box),
classifications (taxon looked up or created, ``score = max(scores)``, scores and logits as
float8 arrays, the algorithm's category map; a reused detection's identical classification is
reused), one occurrence per detection without one and its determination, the capture's
``detections_count``, and last a null-bbox marker for each capture nothing was found on.

The score and logit arrays (29,176 floats each for the global moths model) never pass through
Python: the INSERT copies them from ``result_arrays`` (float8[], where the API put them), or reads
them from the stored result (``result_inbox.payload``) at ``payload.detections[i].classifications
[j]`` when they were stored inline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from antenna_db import counts, taxa
from antenna_db.pipelines import PipelineContext


@dataclass(frozen=True)
class ClassificationSpec:
    # Where its arrays are: result_inbox row, detection index, classification index.
    inbox_id: int
    det_index: int
    cls_index: int
    label: str
    algorithm_id: int
    terminal: bool
    timestamp: datetime | None


@dataclass(frozen=True)
class DetectionSpec:
    inbox_id: int
    det_index: int
    bbox: tuple[float, float, float, float] | None
    algorithm_id: int
    detection_time: datetime | None
    crop_path: str | None
    classifications: tuple[ClassificationSpec, ...] = ()


@dataclass
class Saved:
    # Antenna's async counters count the response items, null markers excluded.
    detections: int = 0
    classifications: int = 0
    # Captures whose new detections have no crop yet (for Antenna's create_detection_images).
    need_crops: list[int] = field(default_factory=list)
    tables: set[str] = field(default_factory=set)


def crop_path(url: str | None) -> str | None:
    """Antenna keeps ``crop_image_url`` as the path when it is non-empty after stripping '/'."""
    if url is None or not url.strip("/"):
        return None
    return url


async def _ids(conn: AsyncConnection[Any], table: str, n: int) -> list[int]:
    """``n`` ids from the table's identity sequence (so Django's next INSERT never collides)."""
    if n == 0:
        return []
    # One row holding them all: a row per id cost more to build than the ids themselves.
    cur = await conn.execute(
        "SELECT array_agg(nextval(pg_get_serial_sequence(%s, 'id'))) AS ids"
        " FROM generate_series(1, %s)",
        (table, n),
    )
    row = await cur.fetchone()
    assert row is not None
    return [int(i) for i in row["ids"]]


_EXISTING_BOXES = """
SELECT n.i, d.id, d.occurrence_id, d.path
FROM unnest(%s::bigint[], %s::jsonb[]) WITH ORDINALITY AS n(image, bbox, i)
CROSS JOIN LATERAL (
    SELECT id, occurrence_id, path FROM main_detection d
    WHERE d.source_image_id = n.image AND d.bbox = n.bbox ORDER BY id LIMIT 1
) d
"""
_INSERT_DETECTIONS = """
INSERT INTO main_detection (id, created_at, updated_at, bbox, "timestamp", path, detection_time,
                            source_image_id, detection_algorithm_id, occurrence_id)
SELECT n.id, now(), now(), n.bbox, si."timestamp", n.path, coalesce(n.detection_time, now()),
       n.image, n.algorithm, n.occurrence
FROM unnest(%s::bigint[], %s::bigint[], %s::jsonb[], %s::text[], %s::timestamptz[],
            %s::bigint[], %s::bigint[]) AS n(id, image, bbox, path, detection_time, algorithm,
                                            occurrence)
LEFT JOIN main_sourceimage si ON si.id = n.image
"""
# A new detection's occurrence, inserted with its determination (computed from the
# classifications just inserted: they are all it has), so neither row is updated afterwards.
_INSERT_OCCURRENCES = """
INSERT INTO main_occurrence (id, created_at, updated_at, project_id, deployment_id, event_id,
                             determination_id, determination_score)
SELECT n.id, now(), now(), si.project_id, si.deployment_id, si.event_id, n.taxon, n.score
FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::float8[]) AS n(id, image, taxon, score)
LEFT JOIN main_sourceimage si ON si.id = n.image
"""
_FILL_PATHS = """
UPDATE main_detection d SET path = n.path, updated_at = now()
FROM unnest(%s::bigint[], %s::text[]) AS n(id, path)
WHERE d.id = n.id AND (d.path IS NULL OR d.path = '')
"""
# An occurrence for each reused detection that has none.
_NEW_OCCURRENCES = """
WITH n AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[]) AS n(occurrence, detection)),
made AS (
    INSERT INTO main_occurrence (id, created_at, updated_at, project_id, deployment_id, event_id)
    SELECT n.occurrence, now(), now(), si.project_id, si.deployment_id, si.event_id
    FROM n JOIN main_detection d ON d.id = n.detection
    JOIN main_sourceimage si ON si.id = d.source_image_id
    RETURNING 1
)
UPDATE main_detection d SET occurrence_id = n.occurrence FROM n WHERE d.id = n.detection
"""
# The classification at payload.detections[d].classifications[c] of an inbox row: its arrays
# (and their max, the score) from result_arrays, where the API put them; a row stored with its
# arrays inline has them read from the payload, the JSON array's text cast as a float8[] literal.
_CLASSIFICATION_SOURCE = """
FROM unnest(%(inbox)s::bigint[], %(det)s::int[], %(cls)s::int[], %(detection)s::bigint[],
            %(taxon)s::bigint[], %(algorithm)s::bigint[], %(category_map)s::bigint[],
            %(terminal)s::boolean[], %(ts)s::timestamptz[], %(reused)s::boolean[])
     AS n(inbox, det, cls, detection, taxon, algorithm, category_map, terminal, ts, reused)
LEFT JOIN result_arrays ra ON ra.inbox_id = n.inbox AND ra.det = n.det AND ra.cls = n.cls
CROSS JOIN LATERAL (
    SELECT (SELECT i.payload->'detections'->n.det->'classifications'->n.cls
            FROM result_inbox i WHERE i.id = n.inbox AND ra.inbox_id IS NULL) AS c
) x
CROSS JOIN LATERAL (
    SELECT coalesce(ra.scores, translate((x.c->'scores')::text, '[]', '{}')::float8[]) AS scores,
           CASE WHEN ra.inbox_id IS NOT NULL THEN ra.logits
                WHEN jsonb_typeof(x.c->'logits') = 'array'
                THEN translate((x.c->'logits')::text, '[]', '{}')::float8[]
           END AS logits
) a
CROSS JOIN LATERAL (
    SELECT coalesce(ra.score, (SELECT max(v) FROM unnest(a.scores) AS v)) AS score
) s
"""
_SAME_CLASSIFICATION = """
SELECT c.id FROM main_classification c
WHERE c.detection_id = n.detection AND c.taxon_id = n.taxon AND c.algorithm_id = n.algorithm
  AND c.score = s.score ORDER BY c.id LIMIT 1
"""
_INSERT_CLASSIFICATIONS = (
    'INSERT INTO main_classification (created_at, updated_at, score, "timestamp", algorithm_id,'
    " detection_id, taxon_id, category_map_id, logits, scores, terminal, applied_to_id)"
    " SELECT now(), now(), s.score, coalesce(n.ts, now()), n.algorithm, n.detection, n.taxon,"
    " n.category_map, a.logits, a.scores, n.terminal, NULL"
    + _CLASSIFICATION_SOURCE
    + " WHERE NOT (n.reused AND EXISTS ("
    + _SAME_CLASSIFICATION
    + "))"
    " RETURNING id, detection_id, taxon_id, score, terminal, algorithm_id"
)
# A reused identical classification gets what it lacks from the response (Antenna fills NULL
# logits, scores, terminal and category map).
_FILL_CLASSIFICATIONS = (
    "UPDATE main_classification m SET logits = coalesce(m.logits, a.logits),"
    " scores = coalesce(m.scores, a.scores), category_map_id = coalesce(m.category_map_id,"
    " n.category_map), updated_at = now()"
    + _CLASSIFICATION_SOURCE
    + " WHERE n.reused AND m.id = ("
    + _SAME_CLASSIFICATION
    + ")"
    " AND (m.logits IS NULL OR m.scores IS NULL OR m.category_map_id IS NULL)"
)
# The position of the highest score, for the rank of a taxon that has to be created.
_ARGMAX = """
SELECT n.label, coalesce(array_position(ra.scores, ra.score) - 1, (
           SELECT e.o - 1 FROM jsonb_array_elements_text(
               i.payload->'detections'->n.det->'classifications'->n.cls->'scores')
           WITH ORDINALITY AS e(v, o) ORDER BY e.v::float8 DESC, e.o LIMIT 1)) AS argmax
FROM unnest(%s::text[], %s::bigint[], %s::int[], %s::int[]) AS n(label, inbox, det, cls)
JOIN result_inbox i ON i.id = n.inbox
LEFT JOIN result_arrays ra ON ra.inbox_id = n.inbox AND ra.det = n.det AND ra.cls = n.cls
"""
# Antenna's occurrence determination: the latest identification a human has not withdrawn
# stands (such occurrences are left alone); otherwise, among the classifications whose score is
# their algorithm's best for the occurrence, the first by terminal, then score. ``determinations``
# is the same rule in Python for new detections (a property test holds the two to agreeing:
# tests/integration/test_result_saving.py).
_DETERMINE = """
WITH occ AS (SELECT DISTINCT unnest(%s::bigint[]) AS id),
open_occ AS (
    SELECT occ.id FROM occ WHERE NOT EXISTS (
        SELECT 1 FROM main_identification i WHERE i.occurrence_id = occ.id AND NOT i.withdrawn)
),
cls AS (
    -- Index lookups per occurrence (OFFSET 0 keeps them nested loops): planned as joins, the
    -- skewed statistics of occurrence_id made it hash all of main_classification every batch.
    SELECT d.occurrence_id, c.id, c.taxon_id, c.score, c.terminal,
           max(c.score) OVER (PARTITION BY d.occurrence_id, c.algorithm_id) AS best
    FROM open_occ
    CROSS JOIN LATERAL (
        SELECT d.id, d.occurrence_id FROM main_detection d WHERE d.occurrence_id = open_occ.id
        OFFSET 0) d
    CROSS JOIN LATERAL (
        SELECT c.id, c.taxon_id, c.score, c.terminal, c.algorithm_id FROM main_classification c
        WHERE c.detection_id = d.id OFFSET 0) c
),
chosen AS (
    SELECT DISTINCT ON (occurrence_id) occurrence_id, taxon_id, score FROM cls
    WHERE score = best ORDER BY occurrence_id, terminal DESC, score DESC, id
)
UPDATE main_occurrence o SET determination_id = chosen.taxon_id,
                             determination_score = chosen.score
FROM chosen WHERE o.id = chosen.occurrence_id
"""
_NULL_MARKERS = """
INSERT INTO main_detection (created_at, updated_at, bbox, "timestamp", path, detection_time,
                            source_image_id, detection_algorithm_id)
SELECT now(), now(), NULL, si."timestamp", NULL, now(), n.image, %s
FROM unnest(%s::bigint[]) AS n(image)
LEFT JOIN main_sourceimage si ON si.id = n.image
WHERE NOT EXISTS (
    SELECT 1 FROM main_detection d
    WHERE d.source_image_id = n.image AND d.detection_algorithm_id = %s
      AND (d.bbox IS NULL OR d.bbox = 'null'::jsonb)
)
"""


# Whether the server can compress TOAST with lz4 (PostgreSQL 14+ built with it), per process.
_LZ4: bool | None = None


async def _fast_toast(conn: AsyncConnection[Any]) -> None:
    """Compress this transaction's big values with lz4 instead of pglz. A classification's
    scores and logits (233 kB each for 29,176 classes) do not compress, but pglz only finds that
    out after trying: 1.0 s of the 1.7 s that 120 such classifications took to insert, lz4 0.14 s.
    A setting of the transaction only: Antenna's tables are not altered, and PostgreSQL reads
    either kind of value."""
    global _LZ4
    if _LZ4 is None:
        cur = await conn.execute(
            "SELECT 'lz4' = ANY(enumvals) AS ok FROM pg_settings"
            " WHERE name = 'default_toast_compression'"
        )
        row = await cur.fetchone()
        _LZ4 = bool(row and row["ok"])
    if _LZ4:
        await conn.execute("SET LOCAL default_toast_compression = lz4")


def _bbox_json(box: tuple[float, float, float, float]) -> str:
    return "[" + ", ".join(repr(float(v)) for v in box) + "]"


@dataclass
class _Detections:
    """Where a batch's detections stand before its classifications are inserted."""

    ids: list[int]  # in ``real``'s order, reused or new
    reused: list[bool]
    # New detections, inserted after the classifications: (id, occurrence id, image, spec).
    new: list[tuple[int, int, int, DetectionSpec]]
    # Occurrences of reused detections, to determine again once the classifications are in.
    to_determine: list[int]


async def save(
    conn: AsyncConnection[Any],
    project_id: int,
    pipeline: PipelineContext,
    images: dict[int, list[DetectionSpec]],
) -> Saved:
    """Save the detections of ``images`` (capture id -> its detections, none: nothing found).

    New rows are inserted, never updated after: ids come from the sequences first, then the
    classifications go in, then each new detection's occurrence with its determination, then
    the detections pointing at them (Antenna's foreign keys are checked at commit). Inserting
    a detection, then its occurrence, then updating the detection and determining the
    occurrence cost two UPDATEs of freshly written rows per batch: a third of the database's
    time on a 100,000-image job."""
    saved = Saved()
    if not images:
        return saved
    real = [(image, det) for image, dets in images.items() for det in dets if det.bbox is not None]
    saved.detections = len(real)
    saved.classifications = sum(
        len(det.classifications) for dets in images.values() for det in dets
    )
    if real:
        found = await _detections(conn, real)
        await _fast_toast(conn)
        inserted = await _classifications(conn, pipeline, real, found.ids, found.reused, saved)
        await _insert_new(conn, found.new, inserted, saved)
        if found.to_determine:
            await conn.execute(_DETERMINE, (found.to_determine,))
        saved.tables |= {"main_detection", "main_classification", "main_occurrence"}
    touched = sorted(images)
    await counts.refresh_capture_detections(conn, project_id, touched)
    saved.tables.add("main_sourceimage")
    empty = [image for image, dets in images.items() if not any(d.bbox for d in dets)]
    if empty and pipeline.detector_id is not None:
        # Last, as in Antenna (antenna#1310): the marker says "processed, nothing found".
        await conn.execute(_NULL_MARKERS, (pipeline.detector_id, empty, pipeline.detector_id))
        saved.tables.add("main_detection")
    return saved


async def _detections(
    conn: AsyncConnection[Any], real: list[tuple[int, DetectionSpec]]
) -> _Detections:
    """Detection ids (reused or new, the new ones not inserted yet) in ``real``'s order; reused
    detections get their missing path and occurrence here."""
    boxes = [_bbox_json(det.bbox) for _, det in real if det.bbox is not None]
    cur = await conn.execute(_EXISTING_BOXES, ([image for image, _ in real], boxes))
    existing = {int(r["i"]) - 1: r for r in await cur.fetchall()}
    new_positions = [i for i in range(len(real)) if i not in existing]
    new_ids = iter(await _ids(conn, "main_detection", len(new_positions)))
    found = _Detections(ids=[], reused=[], new=[], to_determine=[])
    fill: list[tuple[int, str]] = []
    without_occurrence: list[int] = []
    for i, (_, det) in enumerate(real):
        row = existing.get(i)
        if row is None:
            found.ids.append(next(new_ids))
            found.reused.append(False)
            continue
        found.ids.append(int(row["id"]))
        found.reused.append(True)
        if det.crop_path and not row["path"]:
            fill.append((found.ids[-1], det.crop_path))
        if row["occurrence_id"] is None:
            without_occurrence.append(found.ids[-1])
        else:
            found.to_determine.append(int(row["occurrence_id"]))
    # A detection within a batch that repeats another of the same box reuses nothing (Antenna
    # dedupes against committed rows only), so each id here is distinct.
    occurrence_ids = iter(
        await _ids(conn, "main_occurrence", len(new_positions) + len(without_occurrence))
    )
    for i in new_positions:
        image, det = real[i]
        found.new.append((found.ids[i], next(occurrence_ids), image, det))
    if fill:
        await conn.execute(_FILL_PATHS, ([d for d, _ in fill], [p for _, p in fill]))
    if without_occurrence:
        attached = list(occurrence_ids)
        await conn.execute(_NEW_OCCURRENCES, (attached, without_occurrence))
        found.to_determine += attached
    return found


def _rank(row: dict[str, Any]) -> tuple[bool, float, int]:
    return (not row["terminal"], -row["score"], row["id"])


def determinations(inserted: list[dict[str, Any]]) -> dict[int, tuple[int, float]]:
    """Per detection, Antenna's determination among its classifications ``inserted``: of those
    whose score is their algorithm's best, the first by terminal, then score, then id (what
    ``_DETERMINE`` picks for an occurrence with this one detection)."""
    best: dict[tuple[int, int], float] = {}
    for row in inserted:
        if row["score"] is not None:
            key = (row["detection_id"], row["algorithm_id"])
            best[key] = max(best.get(key, row["score"]), row["score"])
    chosen: dict[int, dict[str, Any]] = {}
    for row in inserted:
        if row["score"] is None or row["score"] != best[(row["detection_id"], row["algorithm_id"])]:
            continue
        current = chosen.get(row["detection_id"])
        if current is None or _rank(row) < _rank(current):
            chosen[row["detection_id"]] = row
    return {d: (int(r["taxon_id"]), float(r["score"])) for d, r in chosen.items()}


async def _insert_new(
    conn: AsyncConnection[Any],
    new: list[tuple[int, int, int, DetectionSpec]],
    inserted: list[dict[str, Any]],
    saved: Saved,
) -> None:
    """The new detections' occurrences (determined) and then the detections themselves."""
    if not new:
        return
    chosen = determinations(inserted)
    picks = [chosen.get(detection) for detection, _, _, _ in new]
    await conn.execute(
        _INSERT_OCCURRENCES,
        (
            [occurrence for _, occurrence, _, _ in new],
            [image for _, _, image, _ in new],
            [p[0] if p else None for p in picks],
            [p[1] if p else None for p in picks],
        ),
    )
    await conn.execute(
        _INSERT_DETECTIONS,
        (
            [detection for detection, _, _, _ in new],
            [image for _, _, image, _ in new],
            [_bbox_json(det.bbox) for _, _, _, det in new if det.bbox is not None],
            [det.crop_path for _, _, _, det in new],
            [det.detection_time for _, _, _, det in new],
            [det.algorithm_id for _, _, _, det in new],
            [occurrence for _, occurrence, _, _ in new],
        ),
    )
    saved.need_crops = sorted({image for _, _, image, det in new if det.crop_path is None})


async def _classifications(
    conn: AsyncConnection[Any],
    pipeline: PipelineContext,
    real: list[tuple[int, DetectionSpec]],
    detection_ids: list[int],
    reused: list[bool],
    saved: Saved,
) -> list[dict[str, Any]]:
    """Insert the classifications (a reused detection's identical ones are reused); returns
    the rows inserted."""
    rows = [
        (detection_ids[i], reused[i], c)
        for i, (_, det) in enumerate(real)
        for c in det.classifications
    ]
    if not rows:
        return []
    taxon_of = await _taxa(conn, pipeline, [c for _, _, c in rows])
    values = {
        "inbox": [c.inbox_id for _, _, c in rows],
        "det": [c.det_index for _, _, c in rows],
        "cls": [c.cls_index for _, _, c in rows],
        "detection": [d for d, _, _ in rows],
        "taxon": [taxon_of[c.label] for _, _, c in rows],
        "algorithm": [c.algorithm_id for _, _, c in rows],
        "category_map": [pipeline.category_map_of(c.algorithm_id) for _, _, c in rows],
        "terminal": [c.terminal for _, _, c in rows],
        "ts": [c.timestamp for _, _, c in rows],
        "reused": [r for _, r, _ in rows],
    }
    if any(reused for _, reused, _ in rows):
        await conn.execute(_FILL_CLASSIFICATIONS, values)
    cur = await conn.execute(_INSERT_CLASSIFICATIONS, values)
    inserted = await cur.fetchall()
    pairs = {(pipeline.name_of(c.algorithm_id), taxon_of[c.label]) for _, _, c in rows}
    await taxa.add_to_lists(conn, pairs)
    saved.tables |= {"main_taxon", "main_taxalist", "main_taxalist_taxa"}
    return inserted


async def _taxa(
    conn: AsyncConnection[Any], pipeline: PipelineContext, specs: list[ClassificationSpec]
) -> dict[str, int]:
    labels = sorted({c.label for c in specs})
    found = await taxa.lookup(conn, labels)
    missing = [label for label in labels if label not in found]
    if not missing:
        return found
    first = {}
    for c in specs:
        if c.label in missing and c.label not in first:
            first[c.label] = c
    picked = [first[label] for label in missing]
    cur = await conn.execute(
        _ARGMAX,
        (
            [c.label for c in picked],
            [c.inbox_id for c in picked],
            [c.det_index for c in picked],
            [c.cls_index for c in picked],
        ),
    )
    argmax = {r["label"]: r["argmax"] for r in await cur.fetchall()}
    new = [
        taxa.NewTaxon(label, pipeline.rank_at(first[label].algorithm_id, argmax.get(label)))
        for label in missing
    ]
    created = await taxa.create(conn, new)
    unresolved = [label for label in missing if label not in created]
    if unresolved:
        raise TaxonUnavailable(unresolved[0])
    return found | created


class TaxonUnavailable(ValueError):
    """No taxon can hold this label (another taxon already has its display name)."""

    def __init__(self, label: str) -> None:
        super().__init__(f"no taxon can be found or created for label {label!r}")
        self.label = label


async def job_result_counts(conn: AsyncConnection[Any], job_id: int) -> tuple[int, int]:
    """(detections, classifications) on the job's captures now (null markers excluded)."""
    cur = await conn.execute(
        "SELECT count(DISTINCT d.id) AS detections, count(c.id) AS classifications"
        " FROM job_images ji JOIN main_detection d ON d.source_image_id = ji.source_image_id"
        " LEFT JOIN main_classification c ON c.detection_id = d.id"
        " WHERE ji.job_id = %s AND d.bbox IS NOT NULL AND d.bbox <> 'null'::jsonb",
        (job_id,),
    )
    row = await cur.fetchone()
    return (int(row["detections"]), int(row["classifications"])) if row else (0, 0)
