"""Wire schemas shared with the Antenna ADC worker (docs/antenna-jobs.md section 2).

Field names and optionality follow Antenna's ami/ml/schemas.py; unknown fields are ignored so a
newer worker keeps working. Every value type is one PostgreSQL can store (core.wire_types): text
without U+0000 or lone surrogates, finite floats, integers within their column's range.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.wire_types import FiniteFloat, Int4, SafeJson, SafeStr, Varchar255


class WireModel(BaseModel):
    # Numbers become strings where a str is expected (ids), as pydantic v1 did on Antenna.
    # NaN/Infinity (and 1e400, read as infinity) are refused: no column or jsonb can hold them.
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, allow_inf_nan=False)


class PipelineProcessingTask(WireModel):
    id: SafeStr
    image_id: SafeStr
    image_url: SafeStr
    reply_subject: SafeStr | None = None


class BoundingBox(WireModel):
    x1: FiniteFloat
    y1: FiniteFloat
    x2: FiniteFloat
    y2: FiniteFloat


class AlgorithmReference(WireModel):
    name: SafeStr
    key: SafeStr


class ClassificationResponse(WireModel):
    # Becomes (or finds) the taxon of that name: main_taxon.name is varchar(255).
    classification: Varchar255
    labels: list[SafeStr] | None = None
    # Never empty: its max is stored as the classification's score.
    scores: list[FiniteFloat] = Field(min_length=1)
    logits: list[FiniteFloat] | None = None
    inference_time: FiniteFloat | None = None
    algorithm: AlgorithmReference
    terminal: bool = True
    timestamp: datetime


class DetectionResponse(WireModel):
    source_image_id: SafeStr
    bbox: BoundingBox | None = None
    inference_time: FiniteFloat | None = None
    algorithm: AlgorithmReference
    timestamp: datetime
    # Stored as the detection's path (varchar(255)).
    crop_image_url: Varchar255 | None = None
    classifications: list[ClassificationResponse] = Field(default_factory=list)


class SourceImageResponse(WireModel):
    id: SafeStr
    url: SafeStr


class AlgorithmCategoryMapResponse(WireModel):
    data: list[dict[SafeStr, SafeJson]] = Field(default_factory=list)
    labels: list[SafeStr] = Field(default_factory=list)
    version: SafeStr | None = None
    description: SafeStr | None = None
    uri: SafeStr | None = None


class AlgorithmConfigResponse(WireModel):
    name: SafeStr
    key: SafeStr
    description: SafeStr | None = None
    task_type: SafeStr | None = None
    version: Int4 = 1
    version_name: SafeStr | None = None
    uri: SafeStr | None = None
    category_map: AlgorithmCategoryMapResponse | None = None


class PipelineResultsResponse(WireModel):
    pipeline: SafeStr
    # Deprecated and ignored (Antenna warns), so never stored: left out of model_dump.
    algorithms: dict[str, AlgorithmConfigResponse] = Field(default_factory=dict, exclude=True)
    total_time: FiniteFloat
    source_images: list[SourceImageResponse]
    detections: list[DetectionResponse]
    errors: list[Any] | str | None = Field(default=None, exclude=True)


class PipelineResultsError(WireModel):
    error: SafeStr
    image_id: SafeStr | None = None


class PipelineTaskResult(WireModel):
    reply_subject: SafeStr
    result: PipelineResultsResponse | PipelineResultsError


class TasksResponse(WireModel):
    tasks: list[PipelineProcessingTask]


class QueuedTaskAcknowledgment(WireModel):
    reply_subject: SafeStr
    status: SafeStr
    task_id: SafeStr


class ResultsResponse(WireModel):
    status: SafeStr
    job_id: int
    results_queued: int
    tasks: list[QueuedTaskAcknowledgment] = Field(default_factory=list)


class PipelineStageParam(WireModel):
    name: SafeStr
    key: SafeStr
    category: SafeStr = "default"


class PipelineStage(WireModel):
    key: SafeStr
    name: SafeStr
    params: list[PipelineStageParam] = Field(default_factory=list)
    description: SafeStr | None = None


class PipelineConfigResponse(WireModel):
    name: SafeStr
    slug: SafeStr
    version: Int4 = 1
    description: SafeStr | None = None
    algorithms: list[AlgorithmConfigResponse] = Field(default_factory=list)
    stages: list[PipelineStage] = Field(default_factory=list)


class AsyncPipelineRegistrationRequest(WireModel):
    processing_service_name: SafeStr
    pipelines: list[PipelineConfigResponse] = Field(default_factory=list)


class PipelineRegistrationResponse(WireModel):
    timestamp: datetime
    success: bool
    error: SafeStr | None = None
    pipelines: list[SafeStr] = Field(default_factory=list)
    pipelines_created: list[SafeStr] = Field(default_factory=list)
    algorithms_created: list[SafeStr] = Field(default_factory=list)
    processing_service_id: int | None = None


class ProcessingServiceInfoResponse(WireModel):
    """``GET /info`` of a push-mode (sync) processing service."""

    name: SafeStr
    description: SafeStr | None = None
    pipelines: list[PipelineConfigResponse] = Field(default_factory=list)
    algorithms: list[AlgorithmConfigResponse] = Field(default_factory=list)


class SourceImageRequest(WireModel):
    id: SafeStr
    url: SafeStr


class DetectionRequest(WireModel):
    source_image: SourceImageRequest
    bbox: BoundingBox | None = None
    crop_image_url: SafeStr | None = None
    algorithm: AlgorithmReference


class PipelineRequest(WireModel):
    pipeline: SafeStr
    source_images: list[SourceImageRequest]
    detections: list[DetectionRequest] | None = None
    config: dict[SafeStr, SafeJson] | None = None
