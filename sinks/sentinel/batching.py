"""Size-capped request bodies for the Logs Ingestion API, and the rule for oversized events.

The service refuses a call over 1 MB (1,048,576 bytes) and the limit applies to the body both
before and after gzip. Rows are encoded once each (:mod:`sinks.sentinel.rows`), then packed
into JSON arrays whose *uncompressed* size stays within ``limit``; the compressed body is
smaller except for incompressible data, which is then sent uncompressed (:func:`on_the_wire`),
so both sizes always fit. Nothing here talks to the network.

Oversized events (one row larger than ``limit`` minus the array brackets) are trimmed by
:func:`fit_row`, in this documented order, until the row fits:

1. drop ``RawRecord`` (the original record; every normalized field stays);
2. drop the nested detail columns whose essentials are also in flat columns:
   ``SensitiveTypes`` (names, ids and the match count remain), ``Policies`` (policy and rule
   ids/names and actions remain), ``Enrichment``;
3. repeatedly halve the largest remaining list or string column (lists keep their first
   items, strings their beginning).

Every trimmed column is named in ``TrimmedFields`` (``"Recipients:1200->300"`` for a cut
list), so an analyst can see the row is partial. Identity and time columns (``TimeGenerated``,
``EventId``, ``IdempotencyKey``, ``Kind``, ``Operation``) are never touched; a row that still
does not fit is dead-lettered with the reason, never retried.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

_isal: Any
try:  # ISA-L writes the same gzip format several times faster than zlib (x86-64, arm64 wheels)
    _isal = importlib.import_module("isal.isal_zlib")
except ImportError:  # pragma: no cover - platforms without isal wheels fall back to zlib
    _isal = None

#: The service's per-call limit, compressed or not.
SERVICE_LIMIT = 1_048_576

#: Columns the trimming rule never touches.
PROTECTED = frozenset({"TimeGenerated", "EventId", "IdempotencyKey", "Kind", "Operation", "TrimmedFields"})

#: Whole columns dropped first, in this order.
DROP_FIRST = ("RawRecord", "SensitiveTypes", "Policies", "Enrichment")


@dataclass(slots=True)
class Piece:
    """One encoded row and the spool entry it came from."""

    entry_id: int
    body: bytes


@dataclass(slots=True)
class Chunk:
    """One request: the rows it carries and their JSON array (at most the limit, uncompressed)."""

    pieces: list[Piece]
    body: bytes

    @classmethod
    def of(cls, pieces: list[Piece]) -> Chunk:
        return cls(pieces, array(pieces))

    @property
    def entry_ids(self) -> list[int]:
        return [p.entry_id for p in self.pieces]


def array(pieces: Sequence[Piece]) -> bytes:
    """The JSON array of the encoded rows, built with one copy of the rows (an array is up to
    the 1 MB call limit: ``b"[" + joined + b"]"`` would copy it three times)."""
    if not pieces:
        return b"[]"
    parts: list[bytes] = [b"["]
    for piece in pieces:
        parts.append(piece.body)
        parts.append(b",")
    parts[-1] = b"]"
    return b"".join(parts)


def fit_row(row: dict[str, Any], limit: int) -> tuple[bytes | None, list[str]]:
    """Encode ``row``; trim it by the module's rule when its array would exceed ``limit``.

    Returns ``(encoded row or None if it cannot fit, names of trimmed columns)``.
    """
    budget = limit - 2  # the array brackets
    body = orjson.dumps(row)
    if len(body) <= budget:
        return body, []
    row = dict(row)
    trimmed: list[str] = []
    for name in DROP_FIRST:
        if name in row:
            del row[name]
            trimmed.append(name)
            row["TrimmedFields"] = trimmed
            body = orjson.dumps(row)
            if len(body) <= budget:
                return body, trimmed
    for _ in range(200):
        largest, size = "", 0
        for name, value in row.items():
            if name in PROTECTED or not isinstance(value, str | list | dict):
                continue
            value_size = len(orjson.dumps(value))
            if value_size > size and (len(value) > 1 or isinstance(value, str)):
                largest, size = name, value_size
        if not largest or size <= 2:
            return None, trimmed
        value = row[largest]
        if isinstance(value, dict):
            del row[largest]
            _note(trimmed, largest)
        elif isinstance(value, list):
            row[largest] = value[: len(value) // 2]
            _note(trimmed, f"{largest}:{len(value)}->{len(value) // 2}", prefix=f"{largest}:")
        else:
            if len(value) <= 1:
                return None, trimmed
            row[largest] = value[: len(value) // 2]
            _note(trimmed, largest)
        row["TrimmedFields"] = trimmed
        body = orjson.dumps(row)
        if len(body) <= budget:
            return body, trimmed
    return None, trimmed


def _note(trimmed: list[str], text: str, prefix: str = "") -> None:
    """Record a trimmed column once; a list cut again keeps its original length in the note."""
    key = prefix or text
    for i, existing in enumerate(trimmed):
        if existing == key or (prefix and existing.startswith(prefix)):
            if prefix:
                original = existing[len(prefix) :].split("->")[0]
                trimmed[i] = f"{prefix}{original}->{text.split('->')[1]}"
            return
    trimmed.append(text)


def pack(pieces: Iterable[Piece], limit: int) -> Iterator[list[Piece]]:
    """Group encoded rows, in order, into arrays of at most ``limit`` bytes uncompressed."""
    group: list[Piece] = []
    size = 2
    for piece in pieces:
        extra = len(piece.body) + (1 if group else 0)
        if group and size + extra > limit:
            yield group
            group, size, extra = [], 2, len(piece.body)
        group.append(piece)
        size += extra
    if group:
        yield group


def chunks(pieces: Iterable[Piece], limit: int) -> list[Chunk]:
    """Requests for ``pieces``, in order, each array within ``limit`` bytes uncompressed."""
    return [Chunk.of(group) for group in pack(pieces, limit)]


def on_the_wire(chunk: Chunk, limit: int, compress: bool, level: int = 1) -> tuple[bytes, bool]:
    """``(bytes to send, gzipped?)``: the gzip-compressed array when compressing and it fits ``limit``,
    else the array itself (which always fits: only incompressible data grows, by gzip's framing).

    Runs in the sink's sender thread, overlapping the encoding of the next call.
    """
    if not compress:
        return chunk.body, False
    wire = gzip_bytes(chunk.body, level)
    if len(wire) <= limit:
        return wire, True
    return chunk.body, False


def gzip_bytes(data: bytes, level: int = 1, fast: bool = True) -> bytes:
    """``data`` as a gzip member: with ISA-L when available (``level`` capped at its 3), else zlib."""
    if fast and _isal is not None:
        return bytes(_isal.compress(data, min(level, 3), wbits=31))
    return zlib.compress(data, level, wbits=31)


def split(chunk: Chunk) -> tuple[Chunk, Chunk]:
    """Halve a chunk of two or more rows (after a 413, or to isolate a bad row after a 400)."""
    half = len(chunk.pieces) // 2
    return Chunk.of(chunk.pieces[:half]), Chunk.of(chunk.pieces[half:])
