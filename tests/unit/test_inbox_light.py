"""The light form of an inbox row (core.result_payload.light): arrays dropped, their length kept,
and any shape a faulty writer left accepted without raising."""

from __future__ import annotations

from typing import Any

import pytest

from core.result_payload import light


def test_success_result_loses_its_arrays_and_keeps_their_length() -> None:
    payload = {
        "pipeline": "p",
        "source_images": [{"id": "1"}],
        "detections": [
            {
                "source_image_id": "1",
                "classifications": [
                    {
                        "classification": "a",
                        "scores": [0.1, 0.9],
                        "logits": [1, 2],
                        "labels": ["a", "b"],
                    },
                    {"classification": "b", "n_scores": 29176},
                ],
            }
        ],
    }
    out = light(payload, False)
    first, second = out["detections"][0]["classifications"]
    assert first == {"classification": "a", "n_scores": 2}
    assert second == {"classification": "b", "n_scores": 29176}
    assert out["source_images"] == [{"id": "1"}]


def test_errors_are_left_whole() -> None:
    error = {"error": "boom", "image_id": "3", "detections": [{"classifications": 1}]}
    assert light(error, True) is error


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "text",
        {"detections": "nope"},
        {"detections": [1, None, "x", {"classifications": "nope"}, {"classifications": [3, None]}]},
        {"detections": [{"classifications": [{"scores": "x", "n_scores": "many"}]}]},
        {"detections": [{"classifications": [{"n_scores": 10**400}]}]},
    ],
)
def test_any_shape_is_accepted(payload: Any) -> None:
    out = light(payload, False)
    for detection in out.get("detections", []) if isinstance(out, dict) else []:
        if isinstance(detection, dict):
            assert isinstance(detection["classifications"], list)
            for c in detection["classifications"]:
                if isinstance(c, dict):
                    assert isinstance(c["n_scores"], int) and "scores" not in c
