"""Validating posted results one entry at a time, so one bad entry never sinks the others.

Each entry of ``{"results": [...]}`` is ``{reply_subject, result}`` where ``result`` is a
PipelineResultsResponse, or a PipelineResultsError when it has an ``error`` key (Antenna's rule).
Errors name the entry's field path, e.g. ``results[2].result.detections[0].bbox.x1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from api.http_errors import validation_errors
from core.inbox import InboxEntry
from core.schemas import PipelineResultsError, PipelineResultsResponse

_IMAGE_ID = re.compile(r"^\s*\d{1,18}\s*$")
_SUBJECT_TOKEN = re.compile(r"^[^\s*>]+$")


@dataclass(frozen=True)
class EntryError:
    index: int
    field: str
    message: str


def reply_subject_error(prefix: str, index: int, value: Any) -> EntryError | None:
    """An ack subject of the job's current run (its subjects start with ``prefix``), or the
    reason it is not."""
    field = f"results[{index}].reply_subject"
    if value is None:
        return EntryError(index, field, "This field is required.")
    if not isinstance(value, str):
        return EntryError(index, field, "Not a valid string.")
    if not value.startswith(prefix) or not _SUBJECT_TOKEN.match(value[len(prefix) :]):
        return EntryError(
            index, field, f"Not a task of this job's current run (expected {prefix}...)."
        )
    return None


def _image_id(value: str | None, field: str, index: int) -> int | EntryError | None:
    if value is None:
        return None
    if not _IMAGE_ID.match(value):
        return EntryError(index, field, f"Image id {value!r} is not an integer.")
    return int(value)


def _success(index: int, result: dict[str, Any]) -> PipelineResultsResponse | list[EntryError]:
    prefix = f"results[{index}].result"
    try:
        model = PipelineResultsResponse.model_validate(result)
    except ValidationError as err:
        return [EntryError(index, f, m) for f, m in validation_errors(err, prefix)]
    errors = []
    if not model.source_images:
        errors.append(
            EntryError(index, f"{prefix}.source_images", "At least one source image is required.")
        )
    for i, image in enumerate(model.source_images):
        found = _image_id(image.id, f"{prefix}.source_images[{i}].id", index)
        if isinstance(found, EntryError):
            errors.append(found)
    for i, detection in enumerate(model.detections):
        field = f"{prefix}.detections[{i}].source_image_id"
        found = _image_id(detection.source_image_id, field, index)
        if isinstance(found, EntryError):
            errors.append(found)
    return errors or model


def validate_entry(prefix: str, index: int, raw: Any) -> InboxEntry | list[EntryError]:
    """The inbox row for one posted entry, or every reason it cannot be one."""
    if not isinstance(raw, dict):
        return [EntryError(index, f"results[{index}]", "Expected an object.")]
    errors: list[EntryError] = []
    subject_error = reply_subject_error(prefix, index, raw.get("reply_subject"))
    if subject_error:
        errors.append(subject_error)
    result = raw.get("result")
    if not isinstance(result, dict):
        message = "This field is required." if result is None else "Expected an object."
        return [*errors, EntryError(index, f"results[{index}].result", message)]
    if "error" in result:
        try:
            failure = PipelineResultsError.model_validate(result)
        except ValidationError as err:
            prefix = f"results[{index}].result"
            return errors + [EntryError(index, f, m) for f, m in validation_errors(err, prefix)]
        image_id = _image_id(failure.image_id, f"results[{index}].result.image_id", index)
        if isinstance(image_id, EntryError):
            errors.append(image_id)
        if errors:
            return errors
        assert not isinstance(image_id, EntryError)
        return InboxEntry(
            image_id=image_id,
            reply_subject=raw["reply_subject"],
            is_error=True,
            payload=failure.model_dump_json(),
        )
    success = _success(index, result)
    if isinstance(success, list):
        return errors + success
    if errors:
        return errors
    return InboxEntry(
        image_id=int(success.source_images[0].id),
        reply_subject=raw["reply_subject"],
        is_error=False,
        payload=success.model_dump_json(exclude={"algorithms", "errors"}),
    )
