"""Pure logic of the activities: result parsing, reply subjects, progress math, checkpoints."""

from __future__ import annotations

import dataclasses

from temporalio.testing import ActivityEnvironment

from activities.async_api.models import PublishCheckpoint
from activities.heartbeat import resume_details
from activities.images import collected_progress
from activities.result_saver import BatchOutcome, parse_results, unnamed_errors
from antenna_db.pipelines import Algorithm, PipelineContext
from core.counters import AggregateCounters
from core.ml_progress import apply_counters, fraction, throughput_line
from core.naming import stream_seq_from_reply
from core.progress import new_ml_progress
from core.states import JobState
from storage.inbox import ClaimedRow

PIPELINE = PipelineContext(
    slug="p",
    algorithms={
        "det": Algorithm(
            id=1, key="det", name="det", task_type="localization", category_map_id=None
        ),
        "cls": Algorithm(
            id=2, key="cls", name="cls", task_type="classification", category_map_id=None
        ),
    },
)
TS = "2026-06-01T22:00:00Z"


def detection(image: str, det: str = "det", cls: str = "cls") -> dict:
    return {
        "source_image_id": image,
        "bbox": {"x1": 0, "y1": 0, "x2": 1, "y2": 1},
        "algorithm": {"name": det, "key": det},
        "timestamp": TS,
        "classifications": [
            {
                "classification": "moth",
                "algorithm": {"name": cls, "key": cls},
                "timestamp": TS,
                "n_scores": 2,
            }
        ],
    }


def success(image: str, *dets: dict) -> dict:
    return {
        "pipeline": "p",
        "total_time": 1.0,
        "source_images": [{"id": image, "url": "u"}],
        "detections": list(dets),
    }


def row(n: int, payload: dict, image: int | None = None, error: bool = False) -> ClaimedRow:
    """A claimed inbox row (its light form: classifications without arrays)."""
    return ClaimedRow(
        id=n, image_id=image, reply_subject=f"r{n}", is_error=error, attempts=0, light=payload
    )


def test_parse_results_first_success_wins_and_beats_errors():
    rows = [
        row(1, {"error": "boom", "image_id": "7"}, 7, True),
        row(2, success("7", detection("7"))),
        row(3, success("7", detection("7"), detection("7"))),
        row(4, success("8")),
    ]
    parsed = parse_results(rows, PIPELINE, {})
    assert set(parsed.processed) == {7, 8}
    assert len(parsed.processed[7]) == 1 and parsed.processed[8] == []
    assert parsed.failed == {}


def test_parse_results_unknown_algorithm_fails_the_image():
    parsed = parse_results([row(1, success("5", detection("5", cls="nope")))], PIPELINE, {})
    assert parsed.processed == {}
    assert parsed.failed == {5: "algorithm 'nope' is not registered for pipeline 'p'"}


def test_parse_results_errors_without_image_use_the_resolved_id():
    rows = [row(1, {"error": "gpu oom", "image_id": None}, None, True), row(2, {"error": "x"})]
    assert [r.id for r in unnamed_errors(rows)] == [1, 2]
    parsed = parse_results(rows, PIPELINE, {1: 42})
    assert parsed.failed == {42: "gpu oom"}


def test_refusals_name_the_image_or_else_the_inbox_row():
    outcome = BatchOutcome(refused={5: "bad"})
    outcome.add(BatchOutcome(refused_rows={12: "worse"}))
    assert outcome.refusals() == [("image 5", "bad"), ("result row 12", "worse")]


def test_stream_seq_from_reply_v1_and_v2():
    assert stream_seq_from_reply("$JS.ACK.job_5.job-5-consumer.1.17.17.1700000000.3") == (
        "job_5",
        17,
    )
    v2 = "$JS.ACK.dom.acchash.job_5.job-5-consumer.2.23.30.1700000000.0.rand"
    assert stream_seq_from_reply(v2) == ("job_5", 23)
    assert stream_seq_from_reply("not.an.ack") is None
    assert stream_seq_from_reply("$JS.ACK.a.b.c") is None


def test_progress_math():
    progress = new_ml_progress()
    counters = AggregateCounters(total=10, processed=4, failed=2, detections=9, classifications=8)
    updated = apply_counters(progress, counters)
    process, results = updated.stage("process"), updated.stage("results")
    assert process.status == JobState.STARTED and process.progress == 0.6
    assert (process.param("processed"), process.param("remaining"), process.param("failed")) == (
        6,
        4,
        2,
    )
    assert (results.param("captures"), results.param("detections")) == (4, 9)
    assert progress.stage("process").progress == 0.0  # the input is not modified
    closed = apply_counters(updated, counters, JobState.FAILURE)
    assert closed.stage("results").status == JobState.FAILURE
    assert fraction(0, 0) == 1.0
    assert "6/10 images (2 failed)" in throughput_line(counters, 60.0)
    assert "ETA unknown" in throughput_line(AggregateCounters(total=3), 0.0)


def test_final_status_threshold():
    assert AggregateCounters(total=10, failed=5).final_status(0.5) == JobState.SUCCESS
    assert AggregateCounters(total=10, failed=6).final_status(0.5) == JobState.FAILURE
    assert AggregateCounters().final_status(0.5) == JobState.SUCCESS
    progress = apply_counters(new_ml_progress(), AggregateCounters(), JobState.SUCCESS)
    assert progress.stage("process").progress == 1.0


def test_collected_progress_reports_limit_only_when_trimmed():
    trimmed = collected_progress(new_ml_progress(), 10, 50, 10).stage("collect")
    assert trimmed.param("total_images") == 10 and trimmed.param("limit") == 10
    assert trimmed.status == JobState.SUCCESS
    whole = collected_progress(new_ml_progress(), 10, 10, 20).stage("collect")
    assert whole.param("limit") is None


async def test_checkpoint_is_revalidated_on_retry():
    env = ActivityEnvironment()

    async def resume() -> PublishCheckpoint | None:
        return resume_details(PublishCheckpoint)

    assert await env.run(resume) is None
    env.info = dataclasses.replace(
        env.info, heartbeat_details=[{"last_ordinal": 40, "published": 39, "no_url": 1}]
    )
    assert await env.run(resume) == PublishCheckpoint(last_ordinal=40, published=39, no_url=1)
    env.info = dataclasses.replace(env.info, heartbeat_details=[{"last_ordinal": -3}])
    assert await env.run(resume) is None
