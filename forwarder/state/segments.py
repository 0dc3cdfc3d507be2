"""Spool segments: the events of one batch for one sink, stored as ONE database row.

Writing 500 events as one row costs one B-tree insert instead of 500, and delivering them
costs one delete, which is what makes the spool fast enough (see ``bench/bench_spool.py``).
Each entry still has its own id and its own fate:

* entry id = ``segment id * STRIDE + index`` -- integers that only grow, never reused;
* ``lens`` (uint32 per entry) and ``units`` (int64 ledger reference per entry) are packed
  arrays; ``body`` is the payloads concatenated;
* ``done`` is a bitmap of entries already settled (delivered, dead-lettered) while others of
  the segment are still pending or retried; the row is deleted when every entry is settled.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import accumulate

STRIDE = 1 << 20  # entries per segment id; segments hold far fewer (MAX_ENTRIES)
MAX_ENTRIES = 4096


def entry_id(segment: int, index: int) -> int:
    return segment * STRIDE + index


def split_id(entry: int) -> tuple[int, int]:
    return divmod(entry, STRIDE)


def encode(rows: Sequence[tuple[bytes, int]]) -> tuple[bytes, bytes, bytes, int]:
    """``(lens, units, body, bytes)`` of ``(payload, unit)`` rows."""
    payloads = [r[0] for r in rows]
    lens = array("I", map(len, payloads))
    units = array("q", [r[1] for r in rows])
    body = b"".join(payloads)
    return lens.tobytes(), units.tobytes(), body, len(body)


def decode(lens_blob: bytes, units_blob: bytes, body: bytes) -> tuple[list[int], array[int], array[int]]:
    """``(offsets, lens, units)``; entry i is ``body[offsets[i]:offsets[i] + lens[i]]``."""
    lens = array("I")
    lens.frombytes(lens_blob)
    units = array("q")
    units.frombytes(units_blob)
    offsets = [0, *accumulate(lens)]
    return offsets, lens, units


def count(lens_blob: bytes) -> int:
    """The number of entries of a segment whose ``lens`` is ``lens_blob``, without decoding it."""
    return len(lens_blob) // _LEN_SIZE


_LEN_SIZE = array("I").itemsize


def is_done(done: bytes | bytearray | None, index: int) -> bool:
    return bool(done) and bool(done[index >> 3] & (1 << (index & 7)))  # type: ignore[index]


def mark(done: bytes | None, n: int, indexes: Sequence[int]) -> tuple[bytearray, list[int]]:
    """A copy of the bitmap with ``indexes`` set; returns it and the indexes newly set."""
    bitmap = bytearray(done) if done else bytearray((n + 7) // 8)
    fresh = []
    for i in indexes:
        byte, bit = i >> 3, 1 << (i & 7)
        if not bitmap[byte] & bit:
            bitmap[byte] |= bit
            fresh.append(i)
    return bitmap, fresh


def count_done(done: bytes | None) -> int:
    return sum(bin(b).count("1") for b in done) if done else 0
