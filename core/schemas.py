"""Wire schemas shared with the Antenna ADC worker (reference/antenna-jobs.md section 5).

Field names and optionality follow Antenna's ami/ml/schemas.py; unknown fields are ignored so a
newer worker keeps working.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class WireModel(BaseModel):
    # Numbers become strings where a str is expected (ids), as pydantic v1 did on Antenna.
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class PipelineProcessingTask(WireModel):
    id: str
    image_id: str
    image_url: str
    reply_subject: str | None = None


class BoundingBox(WireModel):
    x1: float
    y1: float
    x2: float
    y2: float


class AlgorithmReference(WireModel):
    name: str
    key: str


class ClassificationResponse(WireModel):
    classification: str
    labels: list[str] | None = None
    scores: list[float] = Field(default_factory=list)
    logits: list[float] | None = None
    inference_time: float | None = None
    algorithm: AlgorithmReference
    terminal: bool = True
    timestamp: datetime


class DetectionResponse(WireModel):
    source_image_id: str
    bbox: BoundingBox | None = None
    inference_time: float | None = None
    algorithm: AlgorithmReference
    timestamp: datetime
    crop_image_url: str | None = None
    classifications: list[ClassificationResponse] = Field(default_factory=list)


class SourceImageResponse(WireModel):
    id: str
    url: str


class AlgorithmCategoryMapResponse(WireModel):
    data: list[dict[str, Any]] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    version: str | None = None
    description: str | None = None
    uri: str | None = None


class AlgorithmConfigResponse(WireModel):
    name: str
    key: str
    description: str | None = None
    task_type: str | None = None
    version: int = 1
    version_name: str | None = None
    uri: str | None = None
    category_map: AlgorithmCategoryMapResponse | None = None


class PipelineResultsResponse(WireModel):
    pipeline: str
    algorithms: dict[str, AlgorithmConfigResponse] = Field(default_factory=dict)
    total_time: float
    source_images: list[SourceImageResponse]
    detections: list[DetectionResponse]
    errors: list[Any] | str | None = None


class PipelineResultsError(WireModel):
    error: str
    image_id: str | None = None


class PipelineTaskResult(WireModel):
    reply_subject: str
    result: PipelineResultsResponse | PipelineResultsError


class TasksRequest(WireModel):
    batch_size: int = Field(ge=1)
    client_info: dict[str, Any] | None = None


class TasksResponse(WireModel):
    tasks: list[PipelineProcessingTask]


class QueuedTaskAcknowledgment(WireModel):
    reply_subject: str
    status: str
    task_id: str


class ResultsResponse(WireModel):
    status: str
    job_id: int
    results_queued: int
    tasks: list[QueuedTaskAcknowledgment] = Field(default_factory=list)


class PipelineStageParam(WireModel):
    name: str
    key: str
    category: str = "default"


class PipelineStage(WireModel):
    key: str
    name: str
    params: list[PipelineStageParam] = Field(default_factory=list)
    description: str | None = None


class PipelineConfigResponse(WireModel):
    name: str
    slug: str
    version: int = 1
    description: str | None = None
    algorithms: list[AlgorithmConfigResponse] = Field(default_factory=list)
    stages: list[PipelineStage] = Field(default_factory=list)


class AsyncPipelineRegistrationRequest(WireModel):
    processing_service_name: str
    pipelines: list[PipelineConfigResponse] = Field(default_factory=list)


class PipelineRegistrationResponse(WireModel):
    timestamp: datetime
    success: bool
    error: str | None = None
    pipelines: list[str] = Field(default_factory=list)
    pipelines_created: list[str] = Field(default_factory=list)
    algorithms_created: list[str] = Field(default_factory=list)
    processing_service_id: int | None = None


class ProcessingServiceInfoResponse(WireModel):
    """``GET /info`` of a push-mode (sync) processing service."""

    name: str
    description: str | None = None
    pipelines: list[PipelineConfigResponse] = Field(default_factory=list)
    algorithms: list[AlgorithmConfigResponse] = Field(default_factory=list)


class SourceImageRequest(WireModel):
    id: str
    url: str


class DetectionRequest(WireModel):
    source_image: SourceImageRequest
    bbox: BoundingBox | None = None
    crop_image_url: str | None = None
    algorithm: AlgorithmReference


class PipelineRequest(WireModel):
    pipeline: str
    source_images: list[SourceImageRequest]
    detections: list[DetectionRequest] | None = None
    config: dict[str, Any] | None = None
