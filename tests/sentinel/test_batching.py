"""Request bodies within the call limit, and the trimming rule."""

from __future__ import annotations

import gzip
import os

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.sentinel.batching import Chunk, Piece, chunks, fit_row, gzip_bytes, on_the_wire, pack, split


@settings(max_examples=50, deadline=None)
@given(sizes=st.lists(st.integers(1, 3000), max_size=60), limit=st.integers(3100, 20_000))
def test_packing_keeps_order_and_every_array_within_the_limit(sizes, limit):
    pieces = [Piece(i, orjson.dumps({"x": "a" * n})) for i, n in enumerate(sizes)]
    groups = list(pack(pieces, limit))
    assert [p.entry_id for g in groups for p in g] == list(range(len(sizes)))
    for g in groups:
        body = b"[" + b",".join(p.body for p in g) + b"]"
        assert len(body) <= limit
        assert orjson.loads(body) == [orjson.loads(p.body) for p in g]


def test_compressed_and_uncompressed_sizes_both_within_the_limit():
    pieces = [Piece(i, orjson.dumps({"text": "compressible " * 100})) for i in range(40)]
    for chunk in chunks(pieces, 20_000):
        assert len(chunk.body) <= 20_000
        wire, gzipped = on_the_wire(chunk, 20_000, compress=True)
        assert gzipped and len(wire) < len(chunk.body) and gzip.decompress(wire) == chunk.body


def test_incompressible_body_goes_uncompressed_rather_than_over_the_limit():
    # random bytes grow under gzip: a full body would exceed the limit once compressed
    chunk = Chunk.of([Piece(0, os.urandom(19_990))])
    wire, gzipped = on_the_wire(chunk, len(chunk.body), compress=True)
    assert not gzipped and wire == chunk.body
    assert on_the_wire(chunk, 20_000, compress=False) == (chunk.body, False)


def test_split_halves_and_keeps_every_row():
    pieces = [Piece(i, b'{"a":1}') for i in range(5)]
    (chunk,) = chunks(pieces, 10_000)
    left, right = split(chunk)
    assert left.entry_ids + right.entry_ids == [0, 1, 2, 3, 4]
    assert orjson.loads(right.body) == [{"a": 1}] * 3


def test_trimming_order_raw_then_detail_then_halving():
    row = {
        "TimeGenerated": "2026-11-23T10:00:00Z",
        "EventId": "e",
        "RawRecord": {"x": "r" * 5000},
        "SensitiveTypes": [{"name": "s" * 3000}],
        "Recipients": [f"user{i}@x.example" for i in range(400)],
    }
    assert fit_row(row, 20_000)[1] == []
    body, trimmed = fit_row(row, 14_000)
    assert trimmed == ["RawRecord"] and body is not None and len(body) <= 14_000 - 2
    body, trimmed = fit_row(row, 7000)
    assert trimmed == ["RawRecord", "SensitiveTypes", "Recipients:400->200"]
    out = orjson.loads(body)
    assert out["TrimmedFields"] == trimmed and out["Recipients"] == row["Recipients"][:200]
    assert out["EventId"] == "e" and out["TimeGenerated"] == row["TimeGenerated"]


def test_protected_columns_are_never_cut():
    body, trimmed = fit_row({"EventId": "e" * 5000, "Description": "d" * 10}, 1000)
    assert body is None


def test_small_rows_untouched():
    body, trimmed = fit_row({"EventId": "e"}, 1000)
    assert body == b'{"EventId":"e"}' and trimmed == []


def test_isal_and_zlib_write_the_same_gzip_format():
    body = orjson.dumps([{"EventId": str(i), "Description": "some text " * 20} for i in range(200)])
    for fast in (True, False):
        wire = gzip_bytes(body, 1, fast=fast)
        assert wire[:2] == b"\x1f\x8b" and gzip.decompress(wire) == body
