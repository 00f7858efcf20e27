"""What the pool's JSON loader gives for values msgspec refuses but PostgreSQL stores."""

from __future__ import annotations

import math

from core.json_codec import loads as _json_loads


def test_msgspec_for_the_usual_and_the_stdlib_for_the_rest() -> None:
    assert _json_loads(b'{"a": [1, 2.5, "x", null]}') == {"a": [1, 2.5, "x", None]}
    assert _json_loads(b'{"n": 123456789012345678901234567890}') == {
        "n": 123456789012345678901234567890
    }
    assert math.isinf(_json_loads("[1e400]")[0])
