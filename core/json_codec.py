"""JSON on the hot paths: msgspec, with the stdlib's json for what msgspec refuses.

msgspec is the one JSON library of the request and result paths. A result POST is split into
``msgspec.Raw`` views of its buffer and read with typed decoders (api/result_body.py,
core/result_arrays.py), which no other library offers; and where JSON costs most, reading a
result POST of tens of MB, it is the fastest (benchmarks/json_codecs.py, best of 9 on the shared
2-core machine: a 51 MB body in 0.40 s, orjson 0.64 s, the stdlib 1.59 s). Small texts (a NATS
task message, a job's progress) it reads about as fast as orjson. orjson writes a stored result
about twice as fast (4 us against 2 us; 117 us against 50 us for 100 detections), microseconds
lost in a save of milliseconds: not worth a second library. The stdlib's json stays where speed
does not matter (settings, the CLI, Antenna's rows written once per job or batch) and for the
texts msgspec refuses (``loads``, api/result_entries.py's lenient reading).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

__all__ = ["dumps", "loads"]


def loads(data: bytes | bytearray | str) -> Any:
    """``json.loads`` at msgspec's speed: integers of any size are kept; what msgspec refuses
    (NaN and Infinity tokens, numbers beyond float64 such as PostgreSQL's 1e400, lone
    surrogates, a byte order mark, not JSON) is read, or refused, by the stdlib as before."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return json.loads(data)


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8 (NaN and Infinity written as null)."""
    return msgspec.json.encode(value)
