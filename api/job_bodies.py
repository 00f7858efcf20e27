"""The request bodies of the job endpoints as pydantic models, with the messages DRF gives.

The ADC and Antenna's UI read DRF's wording ("This field is required.", "A valid integer is
required.", ...), so every field validates with a plain validator that raises that wording
instead of pydantic's. A null counts as absent, as it always did here. ``parse`` turns any
refusal into a BadRequest naming the field (the alias the caller used).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from api.http_errors import BadRequest, field_path
from core.job_requests import NewInternalJob, NewMlJob
from core.states import DispatchMode, JobType
from core.wire_types import INT4_MAX, INT8_MAX, text_problem

REQUIRED = "This field is required."
# Antenna has no maximum, but a NATS fetch of 2**63 fails, and the ADC asks for 24.
MAX_BATCH_SIZE = 1000
_DRF = "drf"


def _refuse(message: str) -> PydanticCustomError:
    return PydanticCustomError(_DRF, message)


def drf_int(value: Any, minimum: int | None = None, maximum: int = INT8_MAX) -> int:
    """DRF's IntegerField: "5" is 5, 5.0 is 5, true is not a number; ``maximum`` defaults to
    bigint's (pass INT4_MAX for a value stored in an integer column)."""
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise _refuse("A valid integer is required.")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (ValueError, OverflowError):
        number = None
    if number is None:
        raise _refuse("A valid integer is required.")
    if minimum is not None and number < minimum:
        raise _refuse(f"Ensure this value is greater than or equal to {minimum}.")
    if number > maximum:
        raise _refuse(f"Ensure this value is less than or equal to {maximum}.")
    return number


def drf_text(value: Any) -> str:
    """A string PostgreSQL can store."""
    if not isinstance(value, str):
        raise _refuse("Not a valid string.")
    problem = text_problem(value)
    if problem:
        raise _refuse(problem)
    return value


def _integer(minimum: int, maximum: int = INT8_MAX) -> PlainValidator:
    return PlainValidator(lambda value: drf_int(value, minimum, maximum))


E = TypeVar("E", bound=StrEnum)


def _choice(enum: type[E], list_choices: bool) -> PlainValidator:
    def check(value: Any) -> E:
        try:
            return enum(value)
        except ValueError:
            if list_choices:
                choices = ", ".join(member.value for member in enum)
                raise _refuse(f"Select a valid choice: {choices}.") from None
            raise _refuse("Select a valid choice.") from None

    return PlainValidator(check)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _refuse("Must be a valid boolean.")
    return value


def _json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _refuse("Expected a JSON object.")
    return value


def _slug(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return drf_text(value).strip()
    raise _refuse("A pipeline slug is required.")


def _pipeline(value: Any) -> str | int:
    """A slug as text, or an id as a number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return drf_int(value, 1)
    return _slug(value)


def _batch_size(value: Any) -> int:
    if value is None:
        raise _refuse("This field may not be null.")
    return drf_int(value, 1, MAX_BATCH_SIZE)


def _client_info(value: Any) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise _refuse("Expected an object.")
    return value


Id = Annotated[int, _integer(0)]
Text = Annotated[str, PlainValidator(drf_text)]


def _aliases(*names: str, **default: Any) -> Any:
    return Field(validation_alias=AliasChoices(*names), **default)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class JobKindBody(_Body):
    """What kind of job a create request is for: ``job_type_key`` (Antenna's) or ``job_type``."""

    job_type: Annotated[JobType, _choice(JobType, list_choices=True)] = Field(
        JobType.ML, validation_alias=AliasChoices("job_type_key", "job_type")
    )
    start_now: Any = None


class CreateMlJobBody(_Body):
    """``POST /jobs/`` for an ML job. The pipeline is a slug (``pipeline_slug``, or ``pipeline``
    as text) or an id (``pipeline_id``, or ``pipeline`` as a number): see ``pipeline_ref``."""

    pipeline: Annotated[str | int, PlainValidator(_pipeline)] | None = None
    pipeline_id: Annotated[int, _integer(1)] | None = None
    pipeline_slug: Annotated[str, PlainValidator(_slug)] | None = None
    project_id: Id = _aliases("project_id", "project")
    collection_id: Id = _aliases("collection_id", "source_image_collection_id")
    name: Text | None = None
    dispatch_mode: Annotated[DispatchMode, _choice(DispatchMode, list_choices=False)] | None = None
    shuffle: Annotated[bool, PlainValidator(_boolean)] = True
    # Stored in an integer column.
    limit: Annotated[int, _integer(0, INT4_MAX)] | None = None

    def pipeline_ref(self) -> str | int:
        if self.pipeline_id is not None and self.pipeline is None:
            return self.pipeline_id
        if self.pipeline_slug is not None:
            return self.pipeline_slug
        if self.pipeline is not None:
            return self.pipeline
        raise BadRequest.field("pipeline_slug", REQUIRED)

    def new_job(self, pipeline_slug: str) -> NewMlJob:
        return NewMlJob(
            project_id=self.project_id,
            pipeline_slug=pipeline_slug,
            collection_id=self.collection_id,
            name=self.name,
            dispatch_mode=self.dispatch_mode,
            limit=self.limit,
            shuffle=self.shuffle,
        )


class CreateInternalJobBody(_Body):
    """``POST /jobs/`` for populate_captures_collection / data_export: params per type in
    ``params`` (checked by the job store, which names ``params.<key>``)."""

    project_id: Id = _aliases("project_id", "project")
    collection_id: Id | None = _aliases("collection_id", "source_image_collection_id", default=None)
    params: Annotated[dict[str, Any], PlainValidator(_json_object)] = Field(default_factory=dict)
    name: Text | None = None

    def new_job(self, job_type: JobType) -> NewInternalJob:
        return NewInternalJob(
            job_type=job_type,
            project_id=self.project_id,
            collection_id=self.collection_id,
            params=self.params,
            name=self.name,
        )


class TasksBody(BaseModel):
    """``POST /jobs/{id}/tasks/`` (a null batch size is refused, not taken as absent)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    batch_size: Annotated[int, PlainValidator(_batch_size)]
    client_info: Annotated[dict[str, Any] | None, PlainValidator(_client_info)] = None


class RetryBody(BaseModel):
    """``POST /jobs/{id}/retry/`` (Antenna's takes no body): ``failed_only`` queues only the
    images the previous run failed."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    failed_only: StrictBool = False


class ReasonBody(BaseModel):
    """``POST /jobs/{id}/pause/`` and ``/resume/``: an optional reason for the job log."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None


B = TypeVar("B", bound=BaseModel)


def parse(model: type[B], body: dict[str, Any]) -> B:
    """The body as ``model``, or a BadRequest naming each field at fault (DRF's wording)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(
            [
                (field_path(e["loc"]), REQUIRED if e["type"] == "missing" else e["msg"])
                for e in exc.errors()
            ]
        ) from None
