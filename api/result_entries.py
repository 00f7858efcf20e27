"""Validating posted results one entry at a time, so one bad entry never sinks the others.

Each entry of ``{"results": [...]}`` is ``{reply_subject, result}`` where ``result`` is a
PipelineResultsResponse, or a PipelineResultsError when it has an ``error`` key (Antenna's rule).
Errors name the entry's field path, e.g. ``results[2].result.detections[0].bbox.x1``.

Entries come from api.result_body: an ``EntryParts`` (raw JSON, validated by pydantic straight
from the bytes, fast) or an ``EntrySlice`` that msgspec could not read (decoded leniently with
``json``, which reads NaN and lone surrogates, so the models can name the field at fault). What is
stored is the validated model re-serialised: ignored fields dropped, numbers normalised.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import msgspec
from pydantic import BaseModel, ValidationError

from api.http_errors import validation_errors
from api.json_nesting import too_deep
from api.result_body import Entry, EntryParts, EntrySlice, RawEntry, decode_entry
from core import json_codec, result_arrays
from core.result_arrays import ArrayRow
from core.result_payload import NOT_STORED, images_named, is_error
from core.schemas import PipelineResultsError, PipelineResultsResponse
from core.wire_types import MAX_DEPTH, NESTED_TOO_DEEPLY, text_problem
from storage.inbox import InboxEntry

_IMAGE_ID = re.compile(r"^\s*\d{1,18}\s*$")
_SUBJECT_TOKEN = re.compile(r"^[^\s*>]+$")
_REQUIRED = "This field is required."
_NOT_AN_OBJECT = "Expected an object."


# An entry this big takes milliseconds to validate or serialise: the API does it off the loop.
BIG_ENTRY_BYTES = 256 * 1024
# A result this big has its score and logit arrays cut out (core/result_arrays.py).
SPLIT_BYTES = 64 * 1024


@dataclass(frozen=True)
class ValidEntry:
    """A valid entry; ``inbox_entry()`` serialises it (a step of its own). ``arrays``: its
    classifications' arrays, cut out of the JSON (core/result_arrays.py); the model then holds
    placeholders in their place. ``size``: the posted entry's length in bytes."""

    image_id: int | None
    reply_subject: str
    result: PipelineResultsResponse | PipelineResultsError
    arrays: tuple[ArrayRow, ...] = ()
    size: int = 0

    def is_big(self) -> bool:
        """Whether serialising it is slow (a big result whose arrays stayed in the model)."""
        return not self.arrays and self.size >= BIG_ENTRY_BYTES

    def task_mismatch(self, index: int, task_image: int | None) -> EntryError | None:
        """Why this entry is not the result of its task's image (None: it is)."""
        if task_image is None:
            return EntryError(
                index,
                f"results[{index}].reply_subject",
                "No such task in this job's queue (of an earlier run, already finished, or never"
                " handed out).",
            )
        others = sorted(images_named(self.result) - {task_image})
        if not others:
            return None
        where = "image_id" if isinstance(self.result, PipelineResultsError) else "source_images"
        return EntryError(
            index,
            f"results[{index}].result.{where}",
            f"Image {others[0]} is not the image of this task ({task_image}).",
        )

    def inbox_entry(self, task_image: int | None = None) -> InboxEntry:
        return InboxEntry(
            image_id=self.image_id if self.image_id is not None else task_image,
            reply_subject=self.reply_subject,
            is_error=isinstance(self.result, PipelineResultsError),
            payload=self._payload(),
            arrays=self.arrays,
        )

    def _payload(self) -> str:
        if not self.arrays:
            return self.result.model_dump_json(exclude=NOT_STORED)
        data = self.result.model_dump(mode="json", exclude=NOT_STORED)
        for row in self.arrays:
            # The arrays are in result_arrays.
            result_arrays.cut_out(
                data["detections"][row.det]["classifications"][row.cls], row.n_scores
            )
        return json_codec.dumps(data).decode()


@dataclass(frozen=True)
class EntryError:
    # None for a problem of the envelope (client_info), not of one entry.
    index: int | None
    field: str
    message: str


def reply_subject_error(prefix: str, index: int, value: Any) -> EntryError | None:
    """An ack subject of the job's current run (its subjects start with ``prefix``), or the
    reason it is not."""
    field = f"results[{index}].reply_subject"
    if value is None:
        return EntryError(index, field, _REQUIRED)
    if not isinstance(value, str):
        return EntryError(index, field, "Not a valid string.")
    problem = text_problem(value)
    if problem:
        return EntryError(index, field, problem)
    if not value.startswith(prefix) or not _SUBJECT_TOKEN.match(value[len(prefix) :]):
        return EntryError(
            index, field, f"Not a task of this job's current run (expected {prefix}...)."
        )
    return None


def reply_subject_of(raw: RawEntry) -> Any:
    """The entry's reply_subject as posted (None if absent or unreadable); nothing validated."""
    return _subject(decode_entry(raw))


def _subject(entry: Entry) -> Any:
    if isinstance(entry, EntryParts):
        if entry.reply_subject is msgspec.UNSET:
            return None
        try:
            return msgspec.json.decode(entry.reply_subject)
        except (msgspec.DecodeError, RecursionError):
            return None
    if isinstance(entry, EntrySlice):
        value = _lenient(entry.data)
        return value.get("reply_subject") if isinstance(value, dict) else None
    return None


def _lenient(data: bytes) -> Any:
    """A text msgspec refused, read by ``json`` (NaN, Infinity, lone surrogates allowed);
    an EntryError-worthy message as a ``_Unreadable`` if even that fails."""
    if too_deep(data, MAX_DEPTH):
        return _Unreadable(NESTED_TOO_DEEPLY)
    try:
        return json.loads(data)
    except RecursionError:
        return _Unreadable(NESTED_TOO_DEEPLY)
    except (ValueError, UnicodeDecodeError) as err:
        return _Unreadable(f"JSON parse error: {err}")


@dataclass(frozen=True)
class _Unreadable:
    message: str


def _image_id(value: str | None, field: str, index: int) -> int | EntryError | None:
    if value is None:
        return None
    if not _IMAGE_ID.match(value):
        return EntryError(index, field, f"Image id {value!r} is not an integer.")
    return int(value)


def _validated(
    model: type[BaseModel], index: int, data: bytes | dict[str, Any]
) -> BaseModel | list[EntryError]:
    """``model`` from JSON bytes (pydantic reads them directly) or from a decoded dict."""
    prefix = f"results[{index}].result"
    try:
        if isinstance(data, dict):
            return model.model_validate(data)
        return model.model_validate_json(data)
    except ValidationError as err:
        if not isinstance(data, dict) and any(e["type"] == "json_invalid" for e in err.errors()):
            # e.g. a lone surrogate pydantic's JSON reader refuses without naming the field.
            value = _lenient(data)
            if isinstance(value, dict):
                return _validated(model, index, value)
            message = value.message if isinstance(value, _Unreadable) else _NOT_AN_OBJECT
            return [EntryError(index, prefix, message)]
        return [EntryError(index, f, m) for f, m in validation_errors(err, prefix)]


def _checked_result(index: int, result: Any) -> BaseModel | list[EntryError]:
    """The result as a PipelineResultsError (``is_error``) or Response, or why not."""
    field = f"results[{index}].result"
    if isinstance(result, bytes):
        if too_deep(result, MAX_DEPTH):
            return [EntryError(index, field, NESTED_TOO_DEEPLY)]
        if result[:1] == b"n":
            return [EntryError(index, field, _REQUIRED)]
        if result[:1] != b"{":
            return [EntryError(index, field, _NOT_AN_OBJECT)]
    elif not isinstance(result, dict):
        return [EntryError(index, field, _REQUIRED if result is None else _NOT_AN_OBJECT)]
    if is_error(result):
        return _validated(PipelineResultsError, index, result)
    model = _validated(PipelineResultsResponse, index, result)
    if isinstance(model, list):
        return model
    assert isinstance(model, PipelineResultsResponse)
    errors = []
    if not model.source_images:
        message = "At least one source image is required."
        errors.append(EntryError(index, f"{field}.source_images", message))
    for i, image in enumerate(model.source_images):
        found = _image_id(image.id, f"{field}.source_images[{i}].id", index)
        if isinstance(found, EntryError):
            errors.append(found)
    for i, detection in enumerate(model.detections):
        found = _image_id(
            detection.source_image_id, f"{field}.detections[{i}].source_image_id", index
        )
        if isinstance(found, EntryError):
            errors.append(found)
    return errors or model


def validate_entry(prefix: str, index: int, raw: RawEntry) -> ValidEntry | list[EntryError]:
    """The inbox row for one posted entry, or every reason it cannot be one."""
    entry = decode_entry(raw)
    subject: Any
    result: Any
    cut: result_arrays.Split | None = None
    if isinstance(entry, EntryParts):
        subject = _subject(entry)
        if entry.result is msgspec.UNSET:
            result = None
        else:
            # Small results keep their arrays in the JSON (one insert, read from the payload
            # by the saver); big ones have them cut out and copied as float8[].
            cut = result_arrays.split(entry.result) if len(entry.result) >= SPLIT_BYTES else None
            result = cut.light if cut is not None else bytes(entry.result)
    else:
        value = _lenient(entry.data) if isinstance(entry, EntrySlice) else entry
        if isinstance(value, _Unreadable):
            return [EntryError(index, f"results[{index}]", value.message)]
        if not isinstance(value, dict):
            return [EntryError(index, f"results[{index}]", _NOT_AN_OBJECT)]
        subject, result = value.get("reply_subject"), value.get("result")
    errors: list[EntryError] = []
    subject_error = reply_subject_error(prefix, index, subject)
    if subject_error:
        errors.append(subject_error)
    model = _checked_result(index, result)
    arrays: list[ArrayRow] | None = None
    if cut is not None:
        if isinstance(model, PipelineResultsResponse):
            arrays = result_arrays.bind(
                cut, [[c for c in d.classifications] for d in model.detections]
            )
        if arrays is None:
            # Not the ADC's usual shape, or something to refuse: validate it whole, so every
            # error is found and named as before.
            assert isinstance(entry, EntryParts) and entry.result is not msgspec.UNSET
            model = _checked_result(index, bytes(entry.result))
    if isinstance(model, list):
        return errors + model
    if isinstance(model, PipelineResultsError):
        image_id = _image_id(model.image_id, f"results[{index}].result.image_id", index)
        if isinstance(image_id, EntryError):
            return [*errors, image_id]
    if errors:
        return errors
    if isinstance(model, PipelineResultsError):
        assert not isinstance(image_id, EntryError)
        return ValidEntry(image_id=image_id, reply_subject=subject, result=model, size=len(raw))
    assert isinstance(model, PipelineResultsResponse)
    return ValidEntry(
        image_id=int(model.source_images[0].id),
        reply_subject=subject,
        result=model,
        arrays=tuple(arrays or ()),
        size=len(raw),
    )
