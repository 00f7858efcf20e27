"""A ``/result/`` body of up to hundreds of MB, cut into its entries without materialising it.

``split_results`` cuts ``{"results": [...], "client_info": ...}`` into per-entry raw JSON with
msgspec: ``msgspec.Raw`` views of the body buffer, no copies, and nothing decoded. Each entry is
then read on its own (``decode_entry``: depth check, then msgspec into ``EntryParts``, whose
``reply_subject`` and ``result`` are again views), validated, and only what is stored is kept.
msgspec refuses the whole envelope for NaN/Infinity tokens (not JSON), lone surrogates, or nesting
past Python's recursion limit; then a tolerant splitter walks the envelope itself and finds each
entry's end by its brackets and strings alone (``json_nesting.skip_value``), so the bad entries
are named in the 400 and the others are read as fast as before. ``decode_entry`` gives an
``EntrySlice`` for an entry msgspec cannot read, decoded leniently by api.result_entries. A body
whose envelope is not JSON is one 400 for the body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from api.http_errors import BadRequest
from api.json_nesting import skip_value, too_deep
from core.wire_types import MAX_DEPTH, NESTED_TOO_DEEPLY


class EntryParts(msgspec.Struct):
    """An object entry; its fields still raw JSON (UNSET when absent). Other keys are skipped."""

    reply_subject: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


@dataclass(frozen=True)
class EntrySlice:
    """An entry msgspec could not read (NaN, a lone surrogate, too deep, not JSON): its text."""

    data: bytes


# What one entry may be: an object, or a value that is not one (refused later).
_Item = EntryParts | str | int | float | bool | list[msgspec.Raw] | None
Entry = _Item | EntrySlice
# One entry's text, not yet read: a view of the body buffer.
RawEntry = msgspec.Raw | memoryview
_Results = list[msgspec.Raw] | dict[str, msgspec.Raw] | str | int | float | bool | None


class _Envelope(msgspec.Struct):
    results: _Results | msgspec.UnsetType = msgspec.UNSET
    client_info: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_DECODER = msgspec.json.Decoder(_Envelope | list[msgspec.Raw])
_ENTRY_DECODER = msgspec.json.Decoder(_Item)


@dataclass
class ResultsBody:
    entries: list[RawEntry]
    # (field, message) pairs about the envelope that do not sink its entries, e.g. client_info.
    problems: list[tuple[str, str]] = field(default_factory=list)
    # The envelope's client_info, when it is a valid object (names the worker: core/worker_calls).
    client_info: dict[str, Any] | None = None


def split_results(body: bytes | bytearray) -> ResultsBody:
    """The entries of a results envelope, or BadRequest for a body that is not one."""
    if not body.strip():
        raise BadRequest.field("results", "This field is required.")
    try:
        decoded = _DECODER.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return _Tolerant(body).envelope()
    if isinstance(decoded, list):
        raise _bare_list()
    results: Any = decoded.results
    if results is msgspec.UNSET or results is None:
        raise BadRequest.field("results", "This field is required.")
    if not isinstance(results, list):
        raise BadRequest.field("results", "Expected a list of items.")
    problems = []
    client_info = None
    if decoded.client_info is not msgspec.UNSET:
        problem = client_info_problem(bytes(decoded.client_info))
        if problem:
            problems.append(("client_info", problem))
        else:
            info = msgspec.json.decode(bytes(decoded.client_info))
            client_info = info if isinstance(info, dict) else None
    return ResultsBody(entries=list(results), problems=problems, client_info=client_info)


def client_info_problem(raw: bytes) -> str | None:
    """client_info is an optional object of any keys, nested at most MAX_DEPTH levels."""
    if too_deep(raw, MAX_DEPTH):
        return NESTED_TOO_DEEPLY
    head = raw.lstrip()[:1]
    if head not in (b"{", b"n"):
        return "Expected an object."
    return None


def decode_entry(data: RawEntry) -> Entry:
    """One entry's text as msgspec reads it, or an EntrySlice to decode leniently."""
    if too_deep(bytes(data), MAX_DEPTH):
        return EntrySlice(bytes(data))
    try:
        return _ENTRY_DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return EntrySlice(bytes(data))


def _bare_list() -> BadRequest:
    return BadRequest.field(
        "results", 'Expected an object {"results": [...]}, got a bare list of results.'
    )


_WS = re.compile(rb"[ \t\n\r]*")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SCALAR = re.compile(rb"[^ \t\n\r,\]}]+")


class _Tolerant:
    """Walks the envelope by hand; each value is found by its extent, never parsed whole."""

    def __init__(self, body: bytes | bytearray) -> None:
        self.body = body
        self.pos = 0

    def envelope(self) -> ResultsBody:
        self._ws()
        if self._peek() == b"[":
            raise _bare_list()
        if self._peek() != b"{":
            raise self._error("Expected a JSON object.")
        self.pos += 1
        entries: list[RawEntry] | None = None
        problems: list[tuple[str, str]] = []
        self._ws()
        empty = self._peek() == b"}"
        self.pos += empty
        while not empty:
            self._ws()
            key = self._key()
            self._ws()
            self._expect(b":")
            self._ws()
            if key == "results":
                entries = self._entries()
            else:
                start = self.pos
                self._skip()
                if key == "client_info":
                    problem = client_info_problem(bytes(self.body[start : self.pos]))
                    problems = [("client_info", problem)] if problem else []
            self._ws()
            if self._peek() == b",":
                self.pos += 1
                continue
            self._expect(b"}")
            break
        self._ws()
        if self.pos != len(self.body):
            raise self._error("Extra data after the JSON object.")
        if entries is None:
            raise BadRequest.field("results", "This field is required.")
        return ResultsBody(entries=entries, problems=problems)

    def _entries(self) -> list[RawEntry]:
        if self._peek() != b"[":
            start = self.pos
            self._skip()
            if self.body[start : self.pos] == b"null":
                raise BadRequest.field("results", "This field is required.")
            raise BadRequest.field("results", "Expected a list of items.")
        self.pos += 1
        entries: list[RawEntry] = []
        self._ws()
        if self._peek() == b"]":
            self.pos += 1
            return entries
        while True:
            self._ws()
            start = self.pos
            self._skip()
            # A view of the buffer: the entries keep no copy of the body.
            entries.append(memoryview(self.body)[start : self.pos])
            self._ws()
            if self._peek() == b",":
                self.pos += 1
                continue
            self._expect(b"]")
            return entries

    def _skip(self) -> None:
        """Move past one value: a container by its brackets, a string, or a bare token."""
        head = self._peek()
        if head in (b"[", b"{"):
            try:
                self.pos = skip_value(self.body, self.pos)
            except ValueError as err:
                raise self._error(str(err)) from None
        elif head == b'"':
            match = _STRING.match(self.body, self.pos)
            if match is None:
                raise self._error("Unterminated string.")
            self.pos = match.end()
        else:
            match = _SCALAR.match(self.body, self.pos)
            if match is None:
                raise self._error("Expected a value.")
            self.pos = match.end()

    def _key(self) -> str:
        match = _STRING.match(self.body, self.pos)
        if match is None:
            raise self._error("Expected a property name in double quotes.")
        self.pos = match.end()
        try:
            key = msgspec.json.decode(match.group())
        except msgspec.DecodeError:
            return ""  # a key we cannot read is none we look for
        return str(key)

    def _ws(self) -> None:
        match = _WS.match(self.body, self.pos)
        assert match is not None
        self.pos = match.end()

    def _peek(self) -> bytes:
        return bytes(self.body[self.pos : self.pos + 1])

    def _expect(self, char: bytes) -> None:
        if self._peek() != char:
            raise self._error(f"Expected {char.decode()!r}.")
        self.pos += 1

    def _error(self, message: str) -> BadRequest:
        return BadRequest.field("body", f"JSON parse error at byte {self.pos}: {message}")
