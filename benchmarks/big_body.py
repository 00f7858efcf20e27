"""A result batch as big as the ADC posts for the 29,176-class global moths model: 24 images x 5
detections, each classification with full ``scores`` and ``logits`` arrays (64 MB of JSON at 6
significant digits; real posts are 110-150 MB)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

from antenna_db.seed import CLASSIFIER_KEY, DETECTOR_KEY

CLASSES = 29_176
IMAGES = 24
DETECTIONS = 5
POLL_INTERVAL = 0.02


def _floats(rng: random.Random, digits: int, logits: bool) -> str:
    values = (rng.gauss(0.0, 3.0) if logits else rng.random() / CLASSES for _ in range(CLASSES))
    return "[" + ",".join(format(v, f".{digits}g") for v in values) + "]"


def _arrays(digits: int) -> list[tuple[str, str]]:
    rng = random.Random(digits)
    return [(_floats(rng, digits, False), _floats(rng, digits, True)) for _ in range(DETECTIONS)]


def _entry(task: dict[str, Any], arrays: list[tuple[str, str]], now: str) -> str:
    """One image's result, as the ADC posts it, with the big arrays spliced in as text."""
    image = task["image_id"]
    detections = []
    for i, (scores, logits) in enumerate(arrays):
        classification = json.dumps(
            {
                "classification": "Noctua pronuba",
                "labels": None,
                "scores": "@S",
                "logits": "@L",
                "inference_time": 0.4,
                "algorithm": {"name": "Moths 2024", "key": CLASSIFIER_KEY},
                "terminal": True,
                "timestamp": now,
            }
        )
        classification = classification.replace('"@S"', scores).replace('"@L"', logits)
        detection = json.dumps(
            {
                "source_image_id": image,
                "bbox": {"x1": 10.0 * i, "y1": 5.0, "x2": 10.0 * i + 80.5, "y2": 90.25},
                "inference_time": 0.05,
                "algorithm": {"name": "Detector", "key": DETECTOR_KEY},
                "timestamp": now,
                "crop_image_url": None,
                "classifications": "@C",
            }
        )
        detections.append(detection.replace('"@C"', f"[{classification}]"))
    result = json.dumps(
        {
            "pipeline": "moths",
            "algorithms": {},
            "total_time": 1.5,
            "source_images": [{"id": image, "url": task["image_url"]}],
            "detections": "@D",
        }
    ).replace('"@D"', "[" + ",".join(detections) + "]")
    return f'{{"reply_subject": {json.dumps(task["reply_subject"])}, "result": {result}}}'


def build_body(tasks: list[dict[str, Any]], size_mb: float) -> bytes:
    """The body, its floats printed with as many digits as bring it nearest ``size_mb``."""
    now = datetime.now(UTC).isoformat()
    best: bytes | None = None
    for digits in (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 17):
        arrays = _arrays(digits)
        body = ('{"results": [' + ",".join(_entry(t, arrays, now) for t in tasks) + "]}").encode()
        if best is None or abs(len(body) - size_mb * 1e6) < abs(len(best) - size_mb * 1e6):
            best = body
        if len(body) >= size_mb * 1e6:
            break
    assert best is not None
    return best
