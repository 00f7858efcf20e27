"""What a pipeline registration (``POST /projects/{id}/pipelines/``) may hold before any of it
is written: every string within its Antenna column's limit and of a sane shape.

Antenna answers a value its column cannot hold with a 500 (and here the connection was reset);
an empty or blank name, a slug with a comma (which can never match the ADC's
``pipeline__slug__in``, a comma-separated list) or a path in it, a negative version were stored.
``problems`` names each such field, so the route answers 400 with all of them at once.

The limits are the columns' in Antenna's schema (``../shared/antenna/schema.sql``, the same as
``antenna_db/standalone/``): COLUMN_LIMITS says which column bounds which field, and
tests/api/test_api_registration_bounds.py checks them against the database's own columns.
"""

from __future__ import annotations

import re

from core.schemas import (
    AlgorithmCategoryMapResponse,
    AlgorithmConfigResponse,
    AsyncPipelineRegistrationRequest,
    PipelineConfigResponse,
)

# (table, column) -> its varchar length in Antenna's schema.
COLUMN_LIMITS: dict[tuple[str, str], int] = {
    ("ml_processingservice", "name"): 255,
    ("ml_pipeline", "name"): 255,
    ("ml_pipeline", "slug"): 255,
    ("ml_algorithm", "name"): 255,
    ("ml_algorithm", "key"): 255,
    ("ml_algorithm", "version_name"): 255,
    ("ml_algorithm", "task_type"): 255,
    ("ml_algorithm", "uri"): 255,
    ("ml_algorithmcategorymap", "version"): 255,
    ("ml_algorithmcategorymap", "uri"): 255,
    ("ml_algorithmcategorymap", "labels"): 255,
}
# Slugs, algorithm keys and task types: what URLs, the listing's comma-separated
# ``pipeline__slug__in`` and file names can carry as they are (Django's slugs, plus dots).
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
IDENTIFIER_RULE = (
    "Use letters, digits, '.', '_' and '-' only, starting with a letter or a digit"
    " (no spaces, commas or path separators)."
)

Problems = list[tuple[str, str]]


def _text(out: Problems, field: str, value: str | None, column: tuple[str, str]) -> None:
    """A required name: not empty or blank, within the column."""
    if value is None or not value.strip():
        out.append((field, "This field may not be blank."))
    else:
        _within(out, field, value, column)


def _within(out: Problems, field: str, value: str | None, column: tuple[str, str]) -> None:
    limit = COLUMN_LIMITS[column]
    if value is not None and len(value) > limit:
        out.append((field, f"Ensure this field has no more than {limit} characters."))


def _identifier(out: Problems, field: str, value: str | None, column: tuple[str, str]) -> None:
    if value is None or not value.strip():
        out.append((field, "This field may not be blank."))
    elif len(value) > COLUMN_LIMITS[column]:
        _within(out, field, value, column)
    elif not IDENTIFIER.match(value):
        out.append((field, f"{value[:80]!r} is not a valid identifier. {IDENTIFIER_RULE}"))


def _version(out: Problems, field: str, value: int) -> None:
    if value < 0:
        out.append((field, "Ensure this value is greater than or equal to 0."))


def _category_map(out: Problems, field: str, cm: AlgorithmCategoryMapResponse) -> None:
    _within(out, f"{field}.version", cm.version, ("ml_algorithmcategorymap", "version"))
    _within(out, f"{field}.uri", cm.uri, ("ml_algorithmcategorymap", "uri"))
    for k, label in enumerate(cm.labels):
        _within(out, f"{field}.labels[{k}]", label, ("ml_algorithmcategorymap", "labels"))


def _algorithm(out: Problems, field: str, algorithm: AlgorithmConfigResponse) -> None:
    _text(out, f"{field}.name", algorithm.name, ("ml_algorithm", "name"))
    _identifier(out, f"{field}.key", algorithm.key, ("ml_algorithm", "key"))
    _version(out, f"{field}.version", algorithm.version)
    _within(out, f"{field}.version_name", algorithm.version_name, ("ml_algorithm", "version_name"))
    if algorithm.task_type is not None:
        _identifier(out, f"{field}.task_type", algorithm.task_type, ("ml_algorithm", "task_type"))
    _within(out, f"{field}.uri", algorithm.uri, ("ml_algorithm", "uri"))
    if algorithm.category_map is not None:
        _category_map(out, f"{field}.category_map", algorithm.category_map)


def _pipeline(out: Problems, field: str, pipeline: PipelineConfigResponse) -> None:
    _text(out, f"{field}.name", pipeline.name, ("ml_pipeline", "name"))
    _identifier(out, f"{field}.slug", pipeline.slug, ("ml_pipeline", "slug"))
    _version(out, f"{field}.version", pipeline.version)
    for j, algorithm in enumerate(pipeline.algorithms):
        _algorithm(out, f"{field}.algorithms[{j}]", algorithm)


def problems(request: AsyncPipelineRegistrationRequest) -> Problems:
    """Every (field, message) the registration cannot be stored with; empty if none."""
    out: Problems = []
    _text(
        out,
        "processing_service_name",
        request.processing_service_name,
        ("ml_processingservice", "name"),
    )
    for i, pipeline in enumerate(request.pipelines):
        _pipeline(out, f"pipelines[{i}]", pipeline)
    return out
