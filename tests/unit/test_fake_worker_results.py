"""Unit tests of the fake worker's synthetic results (pure logic, no services)."""

from __future__ import annotations

import pytest

from antenna_db.seed import CLASSIFIER_KEY, CLASSIFIER_LABELS, DETECTOR_KEY
from cli.fakes.results import CLASSIFIER, DETECTOR, JobCounts, build_result, result_document
from cli.fakes.worker import api_base
from core.schemas import (
    PipelineProcessingTask,
    PipelineResultsError,
    PipelineResultsResponse,
    PipelineTaskResult,
)


def task(image_id: int) -> PipelineProcessingTask:
    return PipelineProcessingTask(
        id=str(image_id),
        image_id=str(image_id),
        image_url=f"https://example.org/{image_id}.jpg",
        reply_subject=f"$JS.ACK.job_1.job-1-consumer.1.{image_id}.1.0.0",
    )


def test_result_is_valid_wire_json_with_detections_and_classifications():
    built = build_result(task(7), "fake-pipeline", total_time=0.5)
    # What the worker posts must parse back, as the server would parse it.
    parsed = PipelineTaskResult.model_validate(built.model_dump(mode="json"))
    assert parsed.reply_subject == "$JS.ACK.job_1.job-1-consumer.1.7.1.0.0"
    body = parsed.result
    assert isinstance(body, PipelineResultsResponse)
    assert body.pipeline == "fake-pipeline"
    assert [(s.id, s.url) for s in body.source_images] == [("7", "https://example.org/7.jpg")]
    assert 1 <= len(body.detections) <= 3
    for detection in body.detections:
        assert detection.source_image_id == "7"
        assert detection.algorithm.key == DETECTOR_KEY == DETECTOR.key
        assert detection.bbox is not None
        assert detection.bbox.x1 < detection.bbox.x2 and detection.bbox.y1 < detection.bbox.y2
        [classification] = detection.classifications
        assert classification.algorithm.key == CLASSIFIER_KEY == CLASSIFIER.key
        assert classification.labels == CLASSIFIER_LABELS
        assert classification.classification in CLASSIFIER_LABELS
        assert sum(classification.scores) == pytest.approx(1.0, abs=1e-4)
        best = classification.scores.index(max(classification.scores))
        assert classification.labels[best] == classification.classification


def test_error_result_names_the_image():
    built = build_result(task(9), "p", error_rate=1.0)
    parsed = PipelineTaskResult.model_validate(built.model_dump(mode="json"))
    assert isinstance(parsed.result, PipelineResultsError)
    assert parsed.result.image_id == "9"
    assert "9" in parsed.result.error


def test_same_image_same_result_so_redeliveries_repeat_exactly():
    a = build_result(task(11), "p", error_rate=0.3, seed=5).model_dump(exclude={"result"})
    b = build_result(task(11), "p", error_rate=0.3, seed=5).model_dump(exclude={"result"})
    assert a == b
    first = build_result(task(11), "p", seed=5).result
    again = build_result(task(11), "p", seed=5).result
    assert isinstance(first, PipelineResultsResponse)
    assert isinstance(again, PipelineResultsResponse)
    assert [d.bbox for d in first.detections] == [d.bbox for d in again.detections]


def test_error_rate_is_roughly_honoured():
    results = [build_result(task(i), "p", error_rate=0.25).result for i in range(2000)]
    errors = sum(isinstance(r, PipelineResultsError) for r in results)
    assert 400 < errors < 600
    assert all(
        not isinstance(build_result(task(i), "p", error_rate=0.0).result, PipelineResultsError)
        for i in range(200)
    )


def test_counts_add_unique_images_once():
    counts = JobCounts()
    ok = result_document(task(1), "p")
    bad = result_document(task(2), "p", error_rate=1.0)
    for result in (ok, bad, ok):
        counts.add(result)
    detections = len(build_result(task(1), "p").result.detections)
    assert counts.summary() == {
        "images": 2,
        "errors": 1,
        "detections": detections,
        "classifications": detections,
        "results_posted": 3,
        "repeats": 1,
        "batches": 0,
        "rejected": 0,
    }


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/api/v2"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/api/v2"),
        ("http://h/api/v2/", "http://h/api/v2"),
    ],
)
def test_api_base(url, base):
    assert api_base(url) == base
