"""Values PostgreSQL can store: text without U+0000 and without lone surrogates.

Log lines and error reasons embed what workers and exceptions say; one unstorable character
must not turn a log write (or the save it reports) into an error.
"""

from __future__ import annotations

import json
import math
from typing import Any

# An error reason kept in one of our rows (an inbox row's last error, a job image's failure) is
# cut to this many characters: enough for the message and the end of a traceback.
STORED_ERROR_CHARS = 2000


def storable(text: str, limit: int | None = None) -> str:
    """``text`` with NUL and lone surrogates replaced, cut to ``limit`` characters."""
    cleaned = text.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")
    if limit is not None and len(cleaned) > limit:
        return cleaned[: max(0, limit - 1)] + "…"
    return cleaned


def storable_json(value: Any) -> str:
    """JSON text jsonb accepts (no NaN, no \\u0000, no lone surrogates), for small values such
    as a log line's context."""
    return json.dumps(_clean(value), default=str)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {storable(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    return value
