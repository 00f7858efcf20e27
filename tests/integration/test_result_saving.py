"""Saving a batch (antenna_db.results.save) on real PostgreSQL: new detections, their
occurrences and classifications are inserted with their links and the occurrence's
determination already in place, and that determination is the one Antenna's rule (the general
``_DETERMINE`` statement) picks for the same rows: on three cases, and as a property on generated
classifications (bounded in CI, more examples with `make fuzz`)."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, NamedTuple

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antenna_db import pipelines, results, taxa
from antenna_db.results import ClassificationSpec, DetectionSpec, determinations
from antenna_db.seed import CLASSIFIER_KEY, DETECTOR_KEY
from storage import inbox
from storage.inbox import InboxEntry
from tests.helpers.jobs import make_job

EXAMPLES = 500 if os.environ.get("ANTENNA_JOBS_TEST_PROFILE") == "full" else 50

# Per image: each classification's (label, scores, terminal); the expected determination.
CASES = {
    # Two share the best score: the terminal one wins.
    0: (
        [
            ("Noctuidae", [0.1, 0.9], False),
            ("Erebidae", [0.9, 0.1], True),
            ("Geometridae", [0.5], True),
        ],
        "Erebidae",
    ),
    # Same score, both terminal: the first inserted (lower id) wins.
    1: ([("Crambidae", [0.7, 0.3], True), ("Tortricidae", [0.3, 0.7], True)], "Crambidae"),
    # The best score among terminal ones.
    2: ([("Noctuidae", [0.2, 0.4], True), ("Geometridae", [0.8], True)], "Geometridae"),
}


def _payload(image: int, classes: list[tuple[str, list[float], bool]]) -> str:
    detection = {
        "source_image_id": str(image),
        "bbox": {"x1": 1.0, "y1": 2.0, "x2": 30.0, "y2": 40.0},
        "classifications": [
            {"classification": label, "scores": scores, "terminal": terminal}
            for label, scores, terminal in classes
        ],
    }
    return json.dumps(
        {"pipeline": "p", "source_images": [{"id": str(image)}], "detections": [detection]}
    )


async def test_a_batch_is_inserted_linked_and_determined_as_antenna_would(pool: Any) -> None:
    made = await make_job(pool, images=len(CASES))
    images = [image for image, _ in made.images]
    async with pool.connection() as conn:
        pipeline = await pipelines.load(conn, made.job.id)
        detector = pipeline.algorithms[DETECTOR_KEY].id
        classifier = pipeline.algorithms[CLASSIFIER_KEY].id
        entries = [
            InboxEntry(image, f"subject-{image}", False, _payload(image, CASES[n][0]))
            for n, image in enumerate(images)
        ]
        async with conn.transaction():
            rows = await inbox.store(conn, made.job.id, entries)
        specs = {
            image: [
                DetectionSpec(
                    inbox_id=row,
                    det_index=0,
                    bbox=(1.0, 2.0, 30.0, 40.0),
                    algorithm_id=detector,
                    detection_time=None,
                    crop_path=None,
                    classifications=tuple(
                        ClassificationSpec(row, 0, j, label, classifier, terminal, None)
                        for j, (label, _, terminal) in enumerate(CASES[n][0])
                    ),
                )
            ]
            for n, (image, row) in enumerate(zip(images, rows, strict=True))
        }
        async with conn.transaction():
            saved = await results.save(conn, made.seeded.project_id, pipeline, specs)
        assert (saved.detections, saved.classifications) == (3, 7)

        cur = await conn.execute(
            "SELECT si.id AS image, d.occurrence_id, o.project_id, o.deployment_id, o.event_id,"
            " si.project_id AS si_project, si.deployment_id AS si_deployment,"
            " si.event_id AS si_event, t.name AS determination, o.determination_score"
            " FROM main_sourceimage si JOIN main_detection d ON d.source_image_id = si.id"
            " JOIN main_occurrence o ON o.id = d.occurrence_id"
            " LEFT JOIN main_taxon t ON t.id = o.determination_id"
            " WHERE si.id = ANY(%s) ORDER BY si.id",
            (images,),
        )
        found = await cur.fetchall()
        assert [r["image"] for r in found] == images
        for n, row in enumerate(found):
            assert (row["project_id"], row["deployment_id"], row["event_id"]) == (
                row["si_project"],
                row["si_deployment"],
                row["si_event"],
            )
            assert row["determination"] == CASES[n][1]
            best = max(max(scores) for label, scores, _ in CASES[n][0] if label == CASES[n][1])
            assert row["determination_score"] == best

        # Antenna's rule as one statement over the same rows changes nothing.
        before = [(r["occurrence_id"], r["determination"]) for r in found]
        await conn.execute(results._DETERMINE, ([o for o, _ in before],))
        cur = await conn.execute(
            "SELECT o.id, t.name FROM main_occurrence o LEFT JOIN main_taxon t"
            " ON t.id = o.determination_id WHERE o.id = ANY(%s) ORDER BY o.id",
            ([o for o, _ in before],),
        )
        assert [(r["id"], r["name"]) for r in await cur.fetchall()] == sorted(before)


def test_determinations_take_each_algorithms_best_then_terminal_then_score_then_id() -> None:
    def row(
        i: int, detection: int, algorithm: int, score: float | None, terminal: bool
    ) -> dict[str, Any]:
        return {
            "id": i,
            "detection_id": detection,
            "algorithm_id": algorithm,
            "taxon_id": 100 + i,
            "score": score,
            "terminal": terminal,
        }

    rows = [
        # Detection 1: algorithm 7's best is 0.9 (not terminal); algorithm 8's best 0.6 is.
        row(1, 1, 7, 0.9, False),
        row(2, 1, 7, 0.5, True),
        row(3, 1, 8, 0.6, True),
        # Detection 2: a tie at the best score goes to the lower id; a NULL score never counts.
        row(5, 2, 7, 0.4, True),
        row(4, 2, 7, 0.4, True),
        row(6, 2, 7, None, True),
        # Detection 3: nothing with a score.
        row(9, 3, 7, None, True),
    ]
    assert determinations(rows) == {1: (103, 0.6), 2: (104, 0.4)}


# Generated classifications: (detection, algorithm, score, terminal), in the order inserted (so
# ids interleave across detections). Scores from a few values (ties at the best are the rule's
# hard part) or any finite float; NULL scores too, which the rule passes over.
MAX_DETECTIONS, MAX_CLASSIFICATIONS = 4, 12
_SCORES = st.one_of(
    st.sampled_from([0.0, -0.0, 0.25, 0.5, 0.9, 1.0]),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)
_CLASSIFICATION = st.tuples(
    st.integers(0, MAX_DETECTIONS - 1), st.integers(0, 1), _SCORES, st.booleans()
)


class _Rows(NamedTuple):
    """What the generated rows refer to: the seeded project's image, two algorithms and one
    taxon per classification (so a determination names the very row chosen)."""

    project: int
    image: int
    algorithms: tuple[int, int]
    taxa: list[int]


@pytest_asyncio.fixture(name="rows")
async def rows_fixture(pool: Any) -> _Rows:
    made = await make_job(pool, images=1)
    async with pool.connection() as conn:
        pipeline = await pipelines.load(conn, made.job.id)
        prefix = uuid.uuid4().hex[:8]
        labels = [f"determination {prefix} {i}" for i in range(MAX_CLASSIFICATIONS)]
        found = await taxa.create(conn, [taxa.NewTaxon(label, "SPECIES") for label in labels])
    return _Rows(
        project=made.seeded.project_id,
        image=made.images[0][0],
        algorithms=(
            pipeline.algorithms[DETECTOR_KEY].id,
            pipeline.algorithms[CLASSIFIER_KEY].id,
        ),
        taxa=[found[label] for label in labels],
    )


@pytest.mark.fuzz
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(classifications=st.lists(_CLASSIFICATION, max_size=MAX_CLASSIFICATIONS))
async def test_sql_and_python_determinations_agree_on_generated_rows(
    pool: Any, rows: _Rows, classifications: list[tuple[int, int, float | None, bool]]
) -> None:
    """``determinations`` (Python, for new detections) picks what ``_DETERMINE`` (SQL, for any
    occurrence) picks, for occurrences of one detection without human identifications."""
    async with pool.connection() as conn, conn.transaction(force_rollback=True):
        occurrences: list[int] = []
        detections: list[int] = []
        for _ in range(MAX_DETECTIONS):
            cur = await conn.execute(
                "INSERT INTO main_occurrence (created_at, updated_at, project_id)"
                " VALUES (now(), now(), %s) RETURNING id",
                (rows.project,),
            )
            occurrence = (await cur.fetchone())["id"]
            cur = await conn.execute(
                "INSERT INTO main_detection (created_at, updated_at, source_image_id,"
                " detection_algorithm_id, occurrence_id) VALUES (now(), now(), %s, %s, %s)"
                " RETURNING id",
                (rows.image, rows.algorithms[0], occurrence),
            )
            occurrences.append(occurrence)
            detections.append((await cur.fetchone())["id"])
        inserted = []
        for n, (detection, algorithm, score, terminal) in enumerate(classifications):
            cur = await conn.execute(
                'INSERT INTO main_classification (created_at, updated_at, score, "timestamp",'
                " algorithm_id, detection_id, taxon_id, terminal)"
                " VALUES (now(), now(), %s, now(), %s, %s, %s, %s)"
                " RETURNING id, detection_id, taxon_id, score, terminal, algorithm_id",
                (score, rows.algorithms[algorithm], detections[detection], rows.taxa[n], terminal),
            )
            inserted.append(await cur.fetchone())

        by_python = determinations(inserted)
        await conn.execute(results._DETERMINE, (occurrences,))
        cur = await conn.execute(
            "SELECT id, determination_id, determination_score FROM main_occurrence"
            " WHERE id = ANY(%s)",
            (occurrences,),
        )
        by_sql = {r["id"]: r for r in await cur.fetchall()}
        for detection, occurrence in zip(detections, occurrences, strict=True):
            row = by_sql[occurrence]
            chosen = (
                None
                if row["determination_id"] is None
                else (row["determination_id"], row["determination_score"])
            )
            assert chosen == by_python.get(detection), (detection, inserted)
