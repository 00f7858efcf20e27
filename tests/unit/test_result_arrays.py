"""Cutting the score and logit arrays out of a posted result (core/result_arrays.py): pure logic,
no services."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from core import result_arrays
from core.schemas import PipelineResultsResponse


def _result(**classification: Any) -> dict[str, Any]:
    cls = {
        "classification": "Noctua pronuba",
        "scores": [0.1, 0.7, 0.2],
        "logits": [-1.0, 2.5, 0.25],
        "algorithm": {"name": "c", "key": "c"},
        "timestamp": "2026-01-01T00:00:00Z",
        **classification,
    }
    return {
        "pipeline": "p",
        "total_time": 1.0,
        "source_images": [{"id": "7", "url": "http://x/7.jpg"}],
        "detections": [
            {
                "source_image_id": "7",
                "bbox": {"x1": 0, "y1": 0, "x2": 1, "y2": 1},
                "algorithm": {"name": "d", "key": "d"},
                "timestamp": "2026-01-01T00:00:00Z",
                "classifications": [cls, dict(cls, scores=[0.5, 0.5])],
            }
        ],
    }


def _rows(text: bytes) -> list[result_arrays.ArrayRow] | None:
    cut = result_arrays.split(text)
    if cut is None:
        return None
    model = PipelineResultsResponse.model_validate_json(cut.light)
    return result_arrays.bind(cut, [list(d.classifications) for d in model.detections])


def _floats(binary: bytes | None) -> list[float] | None:
    """A binary float8[] (array_send's form) read back."""
    if binary is None:
        return None
    ndim, flags, oid, n, lower = struct.unpack_from(">iiiii", binary)
    assert (ndim, flags, oid, lower) == (1, 0, 701, 1)
    assert len(binary) == 20 + 12 * n
    items = [struct.unpack_from(">id", binary, 20 + 12 * i) for i in range(n)]
    assert all(length == 8 for length, _ in items)
    return [value for _, value in items]


def test_arrays_are_cut_out_and_become_binary_float8_arrays():
    text = json.dumps(_result()).encode()
    rows = _rows(text)
    assert rows is not None and len(rows) == 2
    first, second = rows
    assert (first.det, first.cls, first.n_scores, first.score) == (0, 0, 3, 0.7)
    assert _floats(first.scores) == [0.1, 0.7, 0.2]
    assert _floats(first.logits) == [-1.0, 2.5, 0.25]
    row = first.copy_row(41)
    assert row.startswith(struct.pack(">hiqiiii", 6, 8, 41, 4, 0, 4, 0))
    assert row.endswith(struct.pack(">id", 8, 0.7))
    assert (second.det, second.cls, second.score) == (0, 1, 0.5)
    assert b"0.7" not in result_arrays.split(text).light  # type: ignore[union-attr]


def test_whitespace_and_null_logits():
    text = json.dumps(_result(logits=None), indent=2).encode()
    rows = _rows(text)
    assert rows is not None
    assert _floats(rows[0].scores) == [0.1, 0.7, 0.2]
    assert rows[0].logits is None
    assert struct.pack(">i", -1) in rows[0].copy_row(1)


def test_numbers_below_float64_are_stored_as_zero():
    text = json.dumps(_result()).encode().replace(b"0.1,", b"1e-400,", 1)
    rows = _rows(text)
    assert rows is not None
    assert _floats(rows[0].scores) == [0.0, 0.7, 0.2]


@pytest.mark.parametrize(
    "change",
    [
        b'"scores": [0.1, NaN, 0.2]',
        b'"scores": [0.1, 1e400, 0.2]',
        b'"scores": []',
        b'"scores": [0.1, "x"]',
    ],
)
def test_anything_but_finite_numbers_goes_the_whole_way(change):
    text = json.dumps(_result()).encode().replace(b'"scores": [0.1, 0.7, 0.2]', change, 1)
    cut = result_arrays.split(text)
    if cut is None:
        return
    try:
        model = PipelineResultsResponse.model_validate_json(cut.light)
    except ValueError:
        return  # refused as a whole, naming the field
    assert result_arrays.bind(cut, [list(d.classifications) for d in model.detections]) is None


def test_an_array_outside_a_classification_sends_the_result_the_whole_way():
    data = _result()
    data["extra"] = {"scores": [1, 2, 3]}
    assert _rows(json.dumps(data).encode()) is None


def test_a_key_that_only_ends_in_scores_is_not_taken_for_one():
    data = _result()
    data["detections"][0]["classifications"][0]['my"scores'] = [9.0]
    assert _rows(json.dumps(data).encode()) is None
