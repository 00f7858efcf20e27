"""A result as the inbox keeps it: the JSON payload the API (or SYNC_API's /process answer)
stores, and its light form, which is all the saver reads of it (the score and logit arrays stay
in the database; the saver's INSERT reads them there). The SQL is storage/inbox.py's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from core import result_arrays

# Deprecated or ignored parts of a success result (Antenna ignores them too): not stored.
NOT_STORED = {"algorithms", "errors"}


class _ErrorKey(msgspec.Struct):
    error: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_ERROR_KEY = msgspec.json.Decoder(_ErrorKey)


def is_error(result: Mapping[str, Any] | bytes) -> bool:
    """Antenna's rule: a result with an ``error`` key is an error result (PipelineResultsError),
    whatever else it holds. ``result`` decoded, or as the JSON text of an object (only its
    top-level keys are read, by msgspec: a big result is not decoded for this)."""
    if isinstance(result, bytes):
        return b'"error"' in result and _ERROR_KEY.decode(result).error is not msgspec.UNSET
    return "error" in result


def image_id(value: Any) -> int | None:
    """An image id as a result writes it (text), as an int; None if it is none."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def images_named(result: Mapping[str, Any] | BaseModel) -> set[int]:
    """Every image a result names: an error result its ``image_id``; a success result its source
    images and its detections' images (an ADC result names one; a /process answer several).
    ``result`` as a model (core.schemas, LightResult) or in JSON form, of any shape (what is not
    an image id is passed over)."""
    found = {image_id(_field(result, "image_id"))}
    found |= {image_id(_field(s, "id")) for s in _items(_field(result, "source_images"))}
    found |= {image_id(_field(d, "source_image_id")) for d in _items(_field(result, "detections"))}
    return {i for i in found if i is not None}


def error_payload(image_id: int, message: str) -> str:
    """The payload of an error result of our own (e.g. an image without a URL)."""
    return json.dumps({"error": message, "image_id": str(image_id)})


class _Light(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class LightAlgorithm(_Light):
    key: str
    name: str = ""


class LightClassification(_Light):
    classification: str
    algorithm: LightAlgorithm
    terminal: bool = True
    timestamp: datetime | None = None
    # len(scores): the arrays themselves stay in the database.
    n_scores: int = 0


class LightBox(_Light):
    x1: float
    y1: float
    x2: float
    y2: float


class LightDetection(_Light):
    source_image_id: str
    bbox: LightBox | None = None
    algorithm: LightAlgorithm
    timestamp: datetime | None = None
    crop_image_url: str | None = None
    classifications: list[LightClassification] = Field(default_factory=list)


class LightSource(_Light):
    id: str


class LightResult(_Light):
    """A success result without its score and logit arrays."""

    pipeline: str = ""
    source_images: list[LightSource] = Field(default_factory=list)
    detections: list[LightDetection] = Field(default_factory=list)


def _count(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def light(payload: Any, is_error: bool) -> Any:
    """A success result's payload without its score, logit and label arrays (its
    classifications keep only ``n_scores``, their length); anything else as it is. Done in
    Python, not in the claim's SQL: taking the jsonb apart in PostgreSQL cost 19 ms per batch
    of 250 rows, the database being the busiest process of a big job; an inline payload is
    < 64 kB. Any shape is accepted (a row is only as valid as its writer)."""
    if is_error or not isinstance(payload, dict) or not isinstance(payload.get("detections"), list):
        return payload
    for detection in payload["detections"]:
        if not isinstance(detection, dict):
            continue
        found = detection.get("classifications")
        if not isinstance(found, list):
            detection["classifications"] = []
            continue
        for c in found:
            if isinstance(c, dict):
                scores = c.get("scores")
                # The saver does not read the labels either (a stored row keeps them).
                c.pop("labels", None)
                result_arrays.cut_out(
                    c, len(scores) if isinstance(scores, list) else _count(c.get("n_scores"))
                )
    return payload
