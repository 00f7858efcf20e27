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
from typing import Any

from antenna_db.seed import CLASSIFIER_KEY, CLASSIFIER_LABELS, DETECTOR_KEY
from core.result_payload import is_error
from core.schemas import AlgorithmReference, PipelineProcessingTask, PipelineTaskResult

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


def _algorithm(ref: AlgorithmReference) -> dict[str, Any]:
    return {"name": ref.name, "key": ref.key}


def _classification(rng: random.Random, now: str, model: FakeModel) -> dict[str, Any]:
    logits = [round(rng.gauss(0.0, 2.0), 4) for _ in model.labels]
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    return {
        "classification": model.labels[logits.index(top)],
        "labels": list(model.labels),
        "scores": [round(e / total, 6) for e in exps],
        "logits": logits,
        "inference_time": round(rng.uniform(0.005, 0.02), 4),
        "algorithm": _algorithm(model.classifier),
        "terminal": True,
        "timestamp": now,
    }


def _detection(image_id: str, rng: random.Random, now: str, model: FakeModel) -> dict[str, Any]:
    width, height = rng.uniform(40, 300), rng.uniform(40, 300)
    x1, y1 = rng.uniform(0, IMAGE_WIDTH - width), rng.uniform(0, IMAGE_HEIGHT - height)
    bbox = {"x1": round(x1, 1), "y1": round(y1, 1)}
    bbox |= {"x2": round(x1 + width, 1), "y2": round(y1 + height, 1)}
    return {
        "source_image_id": image_id,
        "bbox": bbox,
        "inference_time": round(rng.uniform(0.01, 0.05), 4),
        "algorithm": _algorithm(model.detector),
        "timestamp": now,
        "crop_image_url": None,
        "classifications": [_classification(rng, now, model)],
    }


def result_document(
    task: PipelineProcessingTask,
    pipeline: str,
    *,
    error_rate: float = 0.0,
    seed: int = 0,
    total_time: float = 0.0,
    now: datetime | None = None,
    model: FakeModel = DEMO_MODEL,
    empty_rate: float = 0.0,
) -> dict[str, Any]:
    """One image's result as the JSON the ADC posts (``{reply_subject, result}``): an error
    with probability ``error_rate``, else nothing found with probability ``empty_rate``, else
    1-3 detections, each with one classification. Plain dicts, not models: building and
    dumping models costs 3x as much, and the fake workers share the demo machine's two cores
    with everything they exercise."""
    rng = _rng(seed, task.image_id)
    reply_subject = task.reply_subject or ""
    if rng.random() < error_rate:
        error = f"fake worker: simulated failure of image {task.image_id}"
        return {
            "reply_subject": reply_subject,
            "result": {"error": error, "image_id": task.image_id},
        }
    stamp = (now or datetime.now(UTC)).isoformat()
    count = 0 if empty_rate and rng.random() < empty_rate else rng.randint(1, MAX_DETECTIONS)
    result = {
        "pipeline": pipeline,
        "total_time": total_time,
        "source_images": [{"id": task.image_id, "url": task.image_url}],
        "detections": [_detection(task.image_id, rng, stamp, model) for _ in range(count)],
    }
    return {"reply_subject": reply_subject, "result": result}


def build_result(task: PipelineProcessingTask, pipeline: str, **options: Any) -> PipelineTaskResult:
    """``result_document`` (same options) as the wire model."""
    return PipelineTaskResult.model_validate(result_document(task, pipeline, **options))


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

    def add(self, document: dict[str, Any]) -> None:
        """Count one posted ``result_document``."""
        self.results_posted += 1
        body = document["result"]
        if is_error(body):
            image_id = body.get("image_id")
        else:
            image_id = body["source_images"][0]["id"] if body["source_images"] else None
        if image_id is None or image_id in self.seen:
            self.repeats += 1
            return
        self.seen.add(image_id)
        self.images += 1
        if is_error(body):
            self.errors += 1
            return
        self.detections += len(body["detections"])
        self.classifications += sum(len(d["classifications"]) for d in body["detections"])

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
