"""How deeply a JSON text nests, found with C-speed bytes operations and no recursion.

Python's ``json``, msgspec and pydantic all parse recursively: 2,000 nested ``[`` end in a
RecursionError (a 500) or, in pydantic, an error that names no field. ``too_deep`` answers before
any of them parses: strings are blanked out (escapes first), the brackets are kept, and each pass
of ``replace(b"[]", b"")`` removes exactly one level, so at most ``limit`` passes decide.
``skip_value`` finds where a too-deep value ends, so the values after it can still be read.
"""

from __future__ import annotations

import re

from core.wire_types import MAX_DEPTH

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_STRING = re.compile(rb'"[^"]*"')
_TOKEN = re.compile(rb'["\[\]{}]')
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def skeleton(data: bytes | bytearray) -> bytes:
    """Only the brackets of ``data`` outside strings, ``{}`` written as ``[]``."""
    text = bytes(data).replace(b"\\\\", b"").replace(b'\\"', b"")
    text = _STRING.sub(b"", text.translate(None, delete=_NOT_STRUCTURE))
    return text.replace(b"{", b"[").replace(b"}", b"]")


def too_deep(data: bytes | bytearray, limit: int = MAX_DEPTH) -> bool:
    """True if ``data`` (JSON) nests more than ``limit`` arrays/objects deep.

    A text that is not JSON gives False or True; its parser then reports what is wrong with it.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = skeleton(data)
    for _ in range(limit):
        if not brackets:
            return False
        fewer = brackets.replace(b"[]", b"")
        if len(fewer) == len(brackets):
            return False  # unbalanced: not JSON
        brackets = fewer
    return bool(brackets)


def skip_value(text: bytes | bytearray, pos: int) -> int:
    """The index just past the array or object that starts at ``text[pos]`` (not recursive).

    Only brackets and strings are looked at, so NaN or a bad escape inside does not stop it.
    """
    depth = 0
    while True:
        match = _TOKEN.search(text, pos)
        if match is None:
            raise ValueError("unterminated array or object")
        char, pos = match.group(), match.end()
        if char == b'"':
            rest = _STRING_REST.match(text, pos)
            if rest is None:
                raise ValueError("unterminated string")
            pos = rest.end()
        elif char in (b"[", b"{"):
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return pos
