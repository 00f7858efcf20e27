"""What a result says, read the same way from a model and from its JSON form
(core.result_payload): whether it is an error result, which images it names."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.result_payload import LightResult, images_named, is_error
from core.schemas import PipelineResultsError, PipelineResultsResponse

_NOW = "2024-06-01T22:00:00+00:00"
_ALGORITHM = {"name": "a", "key": "a"}
SUCCESS: dict[str, Any] = {
    "pipeline": "p",
    "total_time": 1.0,
    "source_images": [{"id": "3", "url": "http://x/3.jpg"}, {"id": " 4 ", "url": "u"}],
    "detections": [
        {"source_image_id": "5", "algorithm": _ALGORITHM, "timestamp": _NOW},
        {"source_image_id": "3", "algorithm": _ALGORITHM, "timestamp": _NOW},
    ],
}
ERROR = {"error": "gpu oom", "image_id": "7"}


def test_a_result_names_the_same_images_as_a_model_and_as_json() -> None:
    success = PipelineResultsResponse.model_validate(SUCCESS)
    assert images_named(success) == images_named(SUCCESS) == {3, 4, 5}
    assert images_named(LightResult.model_validate(SUCCESS)) == {3, 4, 5}
    assert images_named(PipelineResultsError.model_validate(ERROR)) == images_named(ERROR) == {7}
    assert images_named({"error": "x"}) == images_named(PipelineResultsError(error="x")) == set()


@pytest.mark.parametrize(
    "odd",
    [
        {},
        {"source_images": "nope", "detections": None},
        {"source_images": [1, None, {"id": "x"}], "detections": [{"source_image_id": []}]},
    ],
)
def test_any_shape_names_what_it_can(odd: dict[str, Any]) -> None:
    assert images_named(odd) == set()


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (ERROR, True),
        ({"error": None}, True),
        ({**SUCCESS, "error": "also"}, True),
        (SUCCESS, False),
        ({"detections": [{"error": "nested"}]}, False),
    ],
)
def test_an_error_result_is_one_with_an_error_key(result: dict[str, Any], expected: bool) -> None:
    assert is_error(result) is expected
    assert is_error(json.dumps(result).encode()) is expected
