"""Score and logit arrays kept out of the JSON: cut from a posted result as text, read once by
msgspec (C), and copied into ``result_arrays`` as binary float8[], so no number of them passes
through a pydantic model, is serialised again, or is parsed by PostgreSQL as JSON or as text.

A 29,176-class result has ten such arrays per image (290k numbers); the rest of the result is a
few hundred bytes. ``split`` replaces each ``"scores": [...]`` / ``"logits": [...]`` with a
placeholder ``[k]`` and keeps the array's text; the caller validates the small remainder as
before and ``bind`` then checks that every placeholder sits where a classification's scores or
logits belong, exactly once, and that every array is a list of finite float64 numbers (text
below float64's smallest number reads as 0.0, as PostgreSQL would store it after we refused the
"out of range" it raises for such text). Anything
else (an array elsewhere, a placeholder moved, NaN, 1e400, a string) returns None and the caller
validates the whole result the old way, which names the field at fault.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

# A classification's arrays (one number per class of the classifier), by key: cut out of a big
# posted result (``split``) and out of every result the saver reads (``cut_out``).
ARRAY_KEYS = ("scores", "logits")
_SCORES, _LOGITS = (key.encode() for key in ARRAY_KEYS)
_KEYS = tuple(b'"%s"' % key for key in (_SCORES, _LOGITS))
# One-byte slices that are JSON whitespace (an empty slice, past the end, is not).
_WHITESPACE_BYTES = (b" ", b"\t", b"\n", b"\r")
# msgspec refuses NaN and Infinity (not JSON) and numbers beyond float64 ("out of range").
_NUMBERS = msgspec.json.Decoder(list[float])


@dataclass
class Split:
    """A result with its arrays replaced by ``[k]``; ``arrays[k]`` is array k's JSON text."""

    light: bytes
    arrays: list[memoryview]
    kinds: list[bytes]


@dataclass(frozen=True)
class ArrayRow:
    """One classification's arrays, as ``result_arrays`` stores them."""

    det: int
    cls: int
    # float8[] in COPY's binary form (array_send): PostgreSQL parsing 7M numbers of text took
    # 3.1 s for a 64 MB post, copying them as binary 0.5 s.
    scores: bytes
    logits: bytes | None
    n_scores: int
    # max(scores): the classification's score.
    score: float

    def copy_row(self, inbox_id: int) -> bytes:
        """The row in COPY's binary format (storage/inbox.py copies them; ``COPY_HEADER`` before
        the first)."""
        logits = _NULL if self.logits is None else _field(self.logits)
        return b"".join(
            (
                _ROW.pack(6, 8, inbox_id, 4, self.det, 4, self.cls),
                _field(self.scores),
                logits,
                _SCORE.pack(8, self.score),
            )
        )


COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
# Field count, then (length, value) of inbox_id (bigint), det and cls (integer).
_ROW = struct.Struct(">hiqiiii")
_SCORE = struct.Struct(">id")
_NULL = struct.pack(">i", -1)
_FLOAT8_OID = 701
_ARRAY_HEAD = struct.Struct(">iiiii")
_LENGTH_8 = b"\x00\x00\x00\x08"


def _field(value: bytes) -> bytes:
    return struct.pack(">i", len(value)) + value


def float8_array(values: list[float]) -> bytes:
    """``values`` as a one-dimensional float8[] in binary form: a header, then each element as
    its length (8) and its big-endian IEEE 754 bytes, written with strided slice copies (C speed,
    ~1.4 ms for 29,176 values) instead of a Python loop."""
    n = len(values)
    doubles = array("d", values)
    if sys.byteorder == "little":
        doubles.byteswap()
    raw = doubles.tobytes()
    out = bytearray(12 * n)
    out[3::12] = _LENGTH_8[3:] * n
    for k in range(8):
        out[4 + k :: 12] = raw[k::8]
    return _ARRAY_HEAD.pack(1, 0, _FLOAT8_OID, n, 1) + bytes(out)


def cut_out(classification: dict[str, Any], n_scores: int) -> None:
    """A classification in JSON form without its arrays, ``n_scores`` (the length of its scores)
    in their place: the saver reads the arrays from the database and the length from here."""
    for key in ARRAY_KEYS:
        classification.pop(key, None)
    classification["n_scores"] = n_scores


def split(result: bytes | memoryview) -> Split | None:
    """The result with its arrays cut out, or None if it has none. Found with ``bytes.find``
    (memchr speed; a regex scanning 150 MB took seconds), so a 2.7 MB result splits in ~2 ms."""
    text = bytes(result)
    view = memoryview(text)
    pieces: list[bytes | memoryview] = []
    arrays: list[memoryview] = []
    kinds: list[bytes] = []
    pos = 0
    for kind, start, end in _arrays_in(text):
        pieces += [view[pos:start], b"[%d]" % len(arrays)]
        arrays.append(view[start:end])
        kinds.append(kind)
        pos = end
    if not arrays:
        return None
    pieces.append(view[pos:])
    return Split(light=b"".join(pieces), arrays=arrays, kinds=kinds)


def _arrays_in(text: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(kind, start, end) of each ``"scores": [...]`` / ``"logits": [...]`` whose array holds no
    brackets (numbers only; whatever else is in it is for ``bind`` to find)."""
    pos = 0
    while True:
        found = [(i, key) for key in _KEYS if (i := text.find(key, pos)) >= 0]
        if not found:
            return
        at, key = min(found)
        pos = at + len(key)
        colon = _skip_ws(text, pos)
        if text[colon : colon + 1] != b":":
            continue
        start = _skip_ws(text, colon + 1)
        if text[start : start + 1] != b"[":
            continue
        end = text.find(b"]", start)
        if end < 0:
            return
        if text.find(b"[", start + 1, end) >= 0:
            continue
        yield key[1:-1], start, end + 1
        pos = end + 1


def _skip_ws(text: bytes, pos: int) -> int:
    while text[pos : pos + 1] in _WHITESPACE_BYTES:
        pos += 1
    return pos


def _placeholder(value: Any, arrays: int) -> int | None:
    if not isinstance(value, Sequence) or len(value) != 1:
        return None
    k = value[0]
    if not isinstance(k, float | int) or k != int(k) or not 0 <= k < arrays:
        return None
    return int(k)


def bind(cut: Split, classifications: list[list[Any]]) -> list[ArrayRow] | None:
    """The array rows of a validated light result (``classifications[det][cls]`` having
    ``scores`` and ``logits``), or None if the placeholders are not exactly where they belong
    or an array is not a list of finite float64 numbers."""
    used: set[int] = set()
    rows: list[ArrayRow] = []
    for det, of_detection in enumerate(classifications):
        for cls, c in enumerate(of_detection):
            k = _placeholder(c.scores, len(cut.arrays))
            if k is None or k in used or cut.kinds[k] != _SCORES:
                return None
            used.add(k)
            logits: bytes | None = None
            if c.logits is not None:
                j = _placeholder(c.logits, len(cut.arrays))
                if j is None or j in used or cut.kinds[j] != _LOGITS:
                    return None
                used.add(j)
                logit_values = _numbers(cut.arrays[j])
                if logit_values is None:
                    return None
                logits = float8_array(logit_values)
            values = _numbers(cut.arrays[k])
            if not values:  # unreadable, or empty (a classification needs a score)
                return None
            score = max(values)
            rows.append(
                ArrayRow(
                    det=det,
                    cls=cls,
                    scores=float8_array(values),
                    logits=logits,
                    n_scores=len(values),
                    score=score,
                )
            )
    if len(used) != len(cut.arrays):
        return None
    return rows


def _numbers(array: memoryview) -> list[float] | None:
    try:
        return _NUMBERS.decode(array)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
