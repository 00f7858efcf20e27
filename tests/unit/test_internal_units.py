"""Pure logic of the SYNC_API and INTERNAL job pieces: params, batch sizes, export encoding and
the resume of a partial export file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from activities.internal.data_export import CSV_HEADER, csv_header, encode_page, open_partial
from activities.internal.models import ExportCheckpoint
from activities.sync_api.process import batch_size
from activities.sync_api.service_choice import service_url
from core import naming
from core.errors import InvalidJobInput
from core.job_params import ExportFormat, validate_params
from core.states import DispatchMode, JobType


def test_workflow_type_follows_job_type_and_dispatch_mode():
    assert naming.workflow_type(JobType.ML, DispatchMode.ASYNC_API) == "JobWorkflow"
    assert naming.workflow_type(JobType.ML, DispatchMode.SYNC_API) == "SyncJobWorkflow"
    for job_type in (JobType.DATA_EXPORT, JobType.POPULATE_CAPTURES_COLLECTION):
        assert naming.workflow_type(job_type, DispatchMode.INTERNAL) == "InternalJobWorkflow"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"method": "random", "size": 0}, "params.size"),
        ({"method": "every_nth"}, "params.every"),
        ({"method": "time_window"}, "params.date_start"),
        (
            {"method": "all", "date_start": "2026-06-02", "date_end": "2026-06-01"},
            "params.date_end",
        ),
        ({"method": "all", "hour_start": 24, "hour_end": 1}, "params.hour_start"),
        ({"method": "all", "hour_end": 1}, "params.hour_start"),
        ({"method": "all", "date_start": "yesterday"}, "params.date_start"),
        ({}, "params.method"),
    ],
)
def test_populate_params_name_the_field_at_fault(raw, field):
    with pytest.raises(InvalidJobInput) as raised:
        validate_params(JobType.POPULATE_CAPTURES_COLLECTION, raw)
    assert raised.value.field == field


def test_params_are_stored_without_unset_values():
    stored = validate_params(JobType.POPULATE_CAPTURES_COLLECTION, {"method": "random", "size": 3})
    assert stored == {"method": "random", "size": 3}
    assert validate_params(JobType.DATA_EXPORT, {}) == {"format": "csv"}
    with pytest.raises(InvalidJobInput):
        validate_params(JobType.ML, {})


@pytest.mark.parametrize(
    ("config", "size"),
    [
        ({}, 1),
        ({"request_source_image_batch_size": 8}, 8),
        ({"request_source_image_batch_size": 0}, 1),
    ]
    + [({"request_source_image_batch_size": v}, 1) for v in ("8", True, None, 2.5)],
)
def test_batch_size_comes_from_the_pipeline_config(config, size):
    assert batch_size(config) == size


def test_service_url_keeps_the_endpoint_path():
    assert service_url("http://gpu:2000/", "process") == "http://gpu:2000/process"
    assert service_url("http://gpu/ml/v1", "/readyz") == "http://gpu/ml/v1/readyz"


def _record(detection_id: int, classifications: list[dict]) -> str:
    return json.dumps(
        {
            "detection_id": detection_id,
            "source_image_id": 7,
            "source_image_url": "https://x/7.jpg",
            "source_image_timestamp": "2026-06-01T22:01:00+00:00",
            "deployment_id": 1,
            "occurrence_id": None,
            "algorithm": "fake-detector",
            "bbox": [1.0, 2.0, 3.0, 4.0],
            "timestamp": None,
            "crop_image_url": None,
            "classifications": classifications,
        }
    )


def test_encode_page_csv_has_a_row_per_classification_and_one_for_none():
    taxa = [
        {"classification_id": 1, "taxon": "A", "algorithm": "c", "score": 0.9, "terminal": True},
        {"classification_id": 2, "taxon": "B", "algorithm": "c", "score": 0.1, "terminal": False},
    ]
    data, rows = encode_page(ExportFormat.CSV, [_record(1, taxa), _record(2, [])])
    parsed = list(csv.DictReader(io.StringIO(csv_header().decode() + data.decode())))
    assert rows == 3 and len(parsed) == 3
    assert list(parsed[0]) == CSV_HEADER
    assert [(r["detection_id"], r["taxon"]) for r in parsed] == [("1", "A"), ("1", "B"), ("2", "")]
    assert parsed[0]["bbox_x2"] == "3.0" and parsed[0]["classification_algorithm"] == "c"


def test_encode_page_jsonl_is_one_line_per_detection():
    data, rows = encode_page(ExportFormat.JSONL, [_record(1, []), _record(2, [])])
    lines = data.decode().splitlines()
    assert rows == 2 and [json.loads(line)["detection_id"] for line in lines] == [1, 2]


def test_open_partial_resumes_at_the_checkpoint_or_starts_over(tmp_path: Path):
    path = tmp_path / "out" / "export.csv.partial"
    fresh = open_partial(path, ExportCheckpoint(), ExportFormat.CSV)
    fresh.write(b"row 1\nrow 2 (after the checkpoint)\n")
    fresh.close()
    header = len(csv_header())
    resumed = open_partial(path, ExportCheckpoint(bytes=header + 6), ExportFormat.CSV)
    assert resumed.tell() == header + 6
    resumed.write(b"row 2\n")
    resumed.close()
    assert path.read_bytes() == csv_header() + b"row 1\nrow 2\n"
    # A checkpoint beyond the file (it was lost or truncated): a fresh file.
    again = open_partial(path, ExportCheckpoint(bytes=10**6), ExportFormat.JSONL)
    assert again.tell() == 0
    again.close()
    assert path.read_bytes() == b""
