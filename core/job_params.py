"""Parameters of the INTERNAL job types, validated at creation and read again by the activities.

They live in ``jobs.params`` (JSONB). A bad value is refused with an InvalidJobInput naming the
field as ``params.<name>``, so the API's 400 and the CLI's message point at what to fix.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import InvalidJobInput
from core.states import JobType
from core.wire_types import INT8_MAX, PositiveInt4


class SampleMethod(StrEnum):
    ALL = "all"
    RANDOM = "random"
    EVERY_NTH = "every_nth"
    TIME_WINDOW = "time_window"


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PopulateParams(_Params):
    """How populate_captures_collection samples the project's captures into the collection.

    The window (dates inclusive, hours of the day in UTC, ``hour_start`` > ``hour_end`` wrapping
    past midnight) filters every method; ``time_window`` is the window alone.
    """

    method: SampleMethod
    # Bounded: both reach SQL as integers (LIMIT, a modulo) and the job's row as JSON.
    size: PositiveInt4 | None = Field(default=None, description="random: how many captures")
    every: PositiveInt4 | None = Field(default=None, description="every_nth: keep 1 in this many")
    seed: int | None = Field(
        default=None, ge=-INT8_MAX - 1, le=INT8_MAX, description="random: same seed, same sample"
    )
    date_start: date | None = None
    date_end: date | None = None
    hour_start: int | None = Field(default=None, ge=0, le=23)
    hour_end: int | None = Field(default=None, ge=0, le=23)

    @model_validator(mode="after")
    def _method_needs(self) -> Self:
        if self.method == SampleMethod.RANDOM and self.size is None:
            raise _FieldError("size", "required by method random")
        if self.method == SampleMethod.EVERY_NTH and self.every is None:
            raise _FieldError("every", "required by method every_nth")
        window = (self.date_start, self.date_end, self.hour_start, self.hour_end)
        if self.method == SampleMethod.TIME_WINDOW and all(v is None for v in window):
            raise _FieldError("date_start", "method time_window needs a date or hour bound")
        if self.date_start and self.date_end and self.date_start > self.date_end:
            raise _FieldError("date_end", "must not be before date_start")
        if (self.hour_start is None) != (self.hour_end is None):
            missing = "hour_end" if self.hour_end is None else "hour_start"
            raise _FieldError(missing, "hour_start and hour_end go together")
        return self


class ExportParams(_Params):
    format: ExportFormat = ExportFormat.CSV


class _FieldError(ValueError):
    """Raised inside a model validator to name the field at fault, not the whole model."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


_MODELS: dict[JobType, type[_Params]] = {
    JobType.POPULATE_CAPTURES_COLLECTION: PopulateParams,
    JobType.DATA_EXPORT: ExportParams,
}


def validate_params(job_type: JobType, raw: dict[str, Any]) -> dict[str, Any]:
    """The params of a job of ``job_type`` as stored (JSON), or InvalidJobInput("params.<f>")."""
    model = _MODELS.get(job_type)
    if model is None:
        raise InvalidJobInput("job_type", f"{job_type.value} jobs take no params here")
    try:
        return model.model_validate(raw).model_dump(mode="json", exclude_none=True)
    except ValidationError as err:
        first = err.errors()[0]
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, _FieldError):
            raise InvalidJobInput(f"params.{cause.field}", cause.message) from None
        path = ".".join(str(part) for part in first["loc"])
        raise InvalidJobInput(f"params.{path}" if path else "params", first["msg"]) from None


def populate_params(raw: dict[str, Any]) -> PopulateParams:
    return PopulateParams.model_validate(raw)


def export_params(raw: dict[str, Any]) -> ExportParams:
    return ExportParams.model_validate(raw)
