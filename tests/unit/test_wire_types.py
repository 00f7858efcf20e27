"""The pure parts of issue 7: safe wire types everywhere, nesting found without recursion."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pydantic import BaseModel

from api.json_nesting import skip_value, too_deep
from core import schemas
from core.wire_types import FINITE_MESSAGE, NESTED_TOO_DEEPLY, NUL_MESSAGE, json_problem

MODELS = [
    m
    for _, m in inspect.getmembers(schemas, inspect.isclass)
    if issubclass(m, schemas.WireModel) and m is not schemas.WireModel
]


def _strings_without_pattern(schema: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(schema, dict):
        if schema.get("type") == "string" and "format" not in schema and "pattern" not in schema:
            found.append(path)
        for key, value in schema.items():
            found += _strings_without_pattern(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found += _strings_without_pattern(value, f"{path}/{i}")
    return found


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_stored_string_field_refuses_nul(model: type[BaseModel]):
    # mode="serialization": fields excluded from dumps (ignored ones, never stored) drop out.
    schema = model.model_json_schema(mode="serialization")
    for name, field in model.model_fields.items():
        if field.exclude:
            schema.get("properties", {}).pop(name, None)
    assert _strings_without_pattern(schema) == []


def test_allow_inf_nan_is_off_on_every_wire_model():
    assert all(m.model_config.get("allow_inf_nan") is False for m in MODELS)


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        (b"[" * 64 + b"]" * 64, False),
        (b"[" * 65 + b"]" * 65, True),
        (b'{"a": "' + b"[" * 500 + b'"}', False),  # brackets inside a string do not count
        (b'{"a": "\\"' + b"[" * 500 + b'"}', False),  # nor after an escaped quote
        (b'{"a": "\\\\", "b": ' + b"[" * 70 + b"]" * 70 + b"}", True),
        (b"[" + b"[[]]," * 200 + b"[]]", False),  # wide, not deep
        (b"[" * 100, False),  # not JSON: left to the parser
    ],
)
def test_too_deep(text: bytes, deep: bool):
    assert too_deep(text, 64) is deep


def test_skip_value_ignores_what_is_inside_strings_and_numbers():
    text = b'  {"a": [NaN, "]}\\"", {"b": 1e400}], "c": "}"} , 5'
    end = skip_value(text, 2)
    assert text[end:] == b" , 5"
    with pytest.raises(ValueError):
        skip_value(b'{"a": [1, 2', 0)


def test_json_problem_names_the_path():
    assert json_problem({"a": [1, {"b": "x\x00"}]}) == (".a[1].b", NUL_MESSAGE)
    assert json_problem([0.5, float("nan")]) == ("[1]", FINITE_MESSAGE)
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    assert json_problem({"k": deep})[1] == NESTED_TOO_DEEPLY
    assert json_problem({"k": deep}, depth_only=True)[1] == NESTED_TOO_DEEPLY
    assert json_problem({"k": "x\x00"}, depth_only=True) is None
