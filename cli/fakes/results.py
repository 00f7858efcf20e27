"""Synthetic pipeline results, in the ADC worker's shapes (core.schemas), for the fake worker.

Everything about an image (error or not, how many detections, where, which label) is drawn from
a random generator seeded by ``(seed, image_id)``: a redelivered task gets the very same result,
and a test can compute the expected totals from the image ids alone.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from antenna_db.seed import CLASSIFIER_KEY, CLASSIFIER_LABELS, DETECTOR_KEY
from core.schemas import (
    AlgorithmReference,
    BoundingBox,
    ClassificationResponse,
    DetectionResponse,
    PipelineProcessingTask,
    PipelineResultsError,
    PipelineResultsResponse,
    PipelineTaskResult,
    SourceImageResponse,
)

DETECTOR = AlgorithmReference(name="Fake Detector", key=DETECTOR_KEY)
CLASSIFIER = AlgorithmReference(name="Fake Classifier", key=CLASSIFIER_KEY)
IMAGE_WIDTH, IMAGE_HEIGHT = 4096, 2160
MAX_DETECTIONS = 3


@dataclass(frozen=True)
class FakeModel:
    """The algorithms a fake result names and the classifier's labels (the demo pipeline's by
    default; another pipeline's to answer its jobs, e.g. Antenna's recipe pipeline)."""

    detector: AlgorithmReference = field(default_factory=lambda: DETECTOR)
    classifier: AlgorithmReference = field(default_factory=lambda: CLASSIFIER)
    labels: tuple[str, ...] = tuple(CLASSIFIER_LABELS)


DEMO_MODEL = FakeModel()


def _rng(seed: int, image_id: str) -> random.Random:
    return random.Random(f"{seed}:{image_id}")


def _classification(rng: random.Random, now: datetime, model: FakeModel) -> ClassificationResponse:
    logits = [round(rng.gauss(0.0, 2.0), 4) for _ in model.labels]
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    scores = [round(e / sum(exps), 6) for e in exps]
    best = logits.index(top)
    return ClassificationResponse(
        classification=model.labels[best],
        labels=list(model.labels),
        scores=scores,
        logits=logits,
        inference_time=round(rng.uniform(0.005, 0.02), 4),
        algorithm=model.classifier,
        terminal=True,
        timestamp=now,
    )


def _detection(
    task: PipelineProcessingTask, rng: random.Random, now: datetime, model: FakeModel
) -> DetectionResponse:
    width, height = rng.uniform(40, 300), rng.uniform(40, 300)
    x1, y1 = rng.uniform(0, IMAGE_WIDTH - width), rng.uniform(0, IMAGE_HEIGHT - height)
    return DetectionResponse(
        source_image_id=task.image_id,
        bbox=BoundingBox(
            x1=round(x1, 1), y1=round(y1, 1), x2=round(x1 + width, 1), y2=round(y1 + height, 1)
        ),
        inference_time=round(rng.uniform(0.01, 0.05), 4),
        algorithm=model.detector,
        timestamp=now,
        crop_image_url=None,
        classifications=[_classification(rng, now, model)],
    )


def build_result(
    task: PipelineProcessingTask,
    pipeline: str,
    *,
    error_rate: float = 0.0,
    seed: int = 0,
    total_time: float = 0.0,
    now: datetime | None = None,
    model: FakeModel = DEMO_MODEL,
    empty_rate: float = 0.0,
) -> PipelineTaskResult:
    """One image's result: an error with probability ``error_rate``, else nothing found with
    probability ``empty_rate``, else 1-3 detections, each with one classification."""
    rng = _rng(seed, task.image_id)
    reply_subject = task.reply_subject or ""
    if rng.random() < error_rate:
        error = PipelineResultsError(
            error=f"fake worker: simulated failure of image {task.image_id}",
            image_id=task.image_id,
        )
        return PipelineTaskResult(reply_subject=reply_subject, result=error)
    now = now or datetime.now(UTC)
    count = 0 if empty_rate and rng.random() < empty_rate else rng.randint(1, MAX_DETECTIONS)
    detections = [_detection(task, rng, now, model) for _ in range(count)]
    response = PipelineResultsResponse(
        pipeline=pipeline,
        total_time=total_time,
        source_images=[SourceImageResponse(id=task.image_id, url=task.image_url)],
        detections=detections,
    )
    return PipelineTaskResult(reply_subject=reply_subject, result=response)


@dataclass
class JobCounts:
    """What the fake worker posted for one job; unique images counted once, repeats apart."""

    images: int = 0
    errors: int = 0
    detections: int = 0
    classifications: int = 0
    results_posted: int = 0
    repeats: int = 0
    batches: int = 0
    rejected: int = 0
    seen: set[str] = field(default_factory=set, repr=False)

    def add(self, result: PipelineTaskResult) -> None:
        self.results_posted += 1
        body = result.result
        image_id = body.image_id if isinstance(body, PipelineResultsError) else None
        if isinstance(body, PipelineResultsResponse):
            image_id = body.source_images[0].id if body.source_images else None
        if image_id is None or image_id in self.seen:
            self.repeats += 1
            return
        self.seen.add(image_id)
        self.images += 1
        if isinstance(body, PipelineResultsError):
            self.errors += 1
            return
        self.detections += len(body.detections)
        self.classifications += sum(len(d.classifications) for d in body.detections)

    def summary(self) -> dict[str, int]:
        return {
            "images": self.images,
            "errors": self.errors,
            "detections": self.detections,
            "classifications": self.classifications,
            "results_posted": self.results_posted,
            "repeats": self.repeats,
            "batches": self.batches,
            "rejected": self.rejected,
        }
