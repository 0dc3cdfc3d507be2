"""Request bodies within the call limit, and the trimming rule."""

from __future__ import annotations

import gzip
import os

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.sentinel.batching import Piece, chunks, fit_row, pack, split


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
    # random bytes (hex) do not compress well: the gzip body must still fit
    pieces = [Piece(i, orjson.dumps({"blob": os.urandom(1500).hex()})) for i in range(40)]
    for chunk in chunks(pieces, 20_000, compress=True):
        assert chunk.json_bytes <= 20_000 and len(chunk.wire) <= 20_000
        if chunk.gzipped:
            assert len(gzip.decompress(chunk.wire)) == chunk.json_bytes


def test_split_halves_and_keeps_every_row():
    pieces = [Piece(i, b'{"a":1}') for i in range(5)]
    (chunk,) = chunks(pieces, 10_000, compress=True)
    left, right = split(chunk, compress=True)
    assert left.entry_ids + right.entry_ids == [0, 1, 2, 3, 4]
    assert orjson.loads(gzip.decompress(right.wire)) == [{"a": 1}] * 3


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
