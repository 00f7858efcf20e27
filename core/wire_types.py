"""Value types of everything the HTTP API accepts, so that whatever is accepted can be stored.

PostgreSQL ``text`` and ``jsonb`` cannot hold U+0000, nor a lone surrogate (``"\\ud800"``: it has
no UTF-8 form); float8 columns and jsonb numbers must be finite; ``integer`` columns stop at
2**31 - 1 and ``bigint`` ones at 2**63 - 1. The pydantic types below check this in pydantic-core
(a pattern, ``allow_inf_nan``, bounds), so a 150 MB result still validates in about a second;
``text_problem`` and ``json_problem`` do the same for values read by hand. ``friendly_message``
turns pydantic's wording for these refusals into one that says what cannot be stored.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, AllowInfNan, Field, StringConstraints
from pydantic_core import ErrorDetails, PydanticCustomError

INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1
INT8_MAX = 2**63 - 1
# Nesting allowed where a schema takes arbitrary JSON (client_info, category maps, params), and
# for one result entry; deeper is refused with NESTED_TOO_DEEPLY, never parsed recursively.
MAX_DEPTH = 64

_NUL_FREE = r"^[^\x00]*$"
NUL_MESSAGE = "Text may not contain the NUL character (U+0000): PostgreSQL cannot store it."
SURROGATE_MESSAGE = (
    "Text may not contain a lone surrogate (e.g. \\ud800): it is not valid Unicode and"
    " PostgreSQL cannot store it."
)
FINITE_MESSAGE = (
    "Must be a finite number within float64 range: NaN, Infinity and numbers like 1e400 are"
    " refused."
)
NESTED_TOO_DEEPLY = f"JSON nested too deeply (more than {MAX_DEPTH} levels)."

# A str that PostgreSQL can store: the pattern runs in pydantic-core, which also refuses a lone
# surrogate (it cannot read the str as UTF-8) with error type "string_unicode".
SafeStr = Annotated[str, StringConstraints(pattern=_NUL_FREE)]
# Text stored in Antenna's varchar(255) columns (a taxon's name, a detection's crop path).
Varchar255 = Annotated[str, StringConstraints(pattern=_NUL_FREE, max_length=255)]
FiniteFloat = Annotated[float, AllowInfNan(False)]
Int4 = Annotated[int, Field(ge=INT4_MIN, le=INT4_MAX)]
PositiveInt4 = Annotated[int, Field(ge=1, le=INT4_MAX)]


def text_problem(value: str) -> str | None:
    """Why PostgreSQL cannot store ``value``, or None."""
    if "\x00" in value:
        return NUL_MESSAGE
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE_MESSAGE
    return None


def json_problem(
    value: Any, limit: int = MAX_DEPTH, *, depth_only: bool = False
) -> tuple[str, str] | None:
    """The first (path, message) in a decoded JSON value that cannot be stored as jsonb, or None.

    Iterative, so no depth can make it recurse; the path is relative (``[3].label``).
    ``depth_only`` checks the nesting alone (for values that are read but not stored).
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if depth_only and not isinstance(item, dict | list):
            continue
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return path, problem
        elif isinstance(item, float):
            if not math.isfinite(item):
                return path, FINITE_MESSAGE
        elif isinstance(item, dict | list):
            if depth > limit:
                return path, NESTED_TOO_DEEPLY
            if isinstance(item, list):
                stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))
                continue
            for key, v in item.items():
                problem = None if depth_only else text_problem(key)
                if problem:
                    return f"{path}.{key!r}", problem
                stack.append((v, f"{path}.{key}", depth + 1))
    return None


def _check_json(value: Any) -> Any:
    problem = json_problem(value)
    if problem is not None:
        path, message = problem
        raise PydanticCustomError(
            "unstorable_json", "{path}: {message}", {"path": path or ".", "message": message}
        )
    return value


# Arbitrary JSON that will be stored (jsonb): safe strings, finite numbers, bounded depth.
SafeJson = Annotated[Any, AfterValidator(_check_json)]


def friendly_message(error: ErrorDetails) -> str:
    """pydantic's message, or ours where it refused something PostgreSQL cannot store."""
    kind = error["type"]
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == _NUL_FREE:
        return NUL_MESSAGE
    if kind == "string_unicode":
        return SURROGATE_MESSAGE
    if kind == "finite_number":
        return FINITE_MESSAGE
    if kind == "json_invalid" and "recursion limit" in error["msg"]:
        return NESTED_TOO_DEEPLY
    return error["msg"]
