"""Cutting values to a size limit without ever breaking escaping or UTF-8.

Contract: formatters cut the *unescaped* text (a Python ``str``, so never inside a UTF-8
sequence) and escape afterwards, so an escape sequence can never be split. A value that was
cut ends with :data:`MARKER`, and the result (marker included) never exceeds the limit.

Limits are counted in one of two units:

* characters of the unescaped value (:func:`cut_chars`) -- the per-key lengths of the CEF
  dictionary are in characters;
* bytes of the escaped, UTF-8 encoded value (:func:`cut_bytes`) -- what a syslog receiver's
  maximum message size counts.
"""

from __future__ import annotations

from collections.abc import Callable

#: Appended to every value that was cut. Plain ASCII with nothing any format escapes.
MARKER = "...[truncated]"


def cut_chars(value: str, limit: int) -> tuple[str, bool]:
    """``value`` cut to at most ``limit`` characters (marker included); ``(text, was_cut)``."""
    if len(value) <= limit:
        return value, False
    keep = limit - len(MARKER)
    if keep <= 0:
        return MARKER[: max(limit, 0)], True
    return value[:keep] + MARKER, True


def cut_bytes(value: str, limit: int, escape: Callable[[str], str]) -> tuple[str, bool]:
    """``value`` cut so that ``len(escape(result).encode())`` is at most ``limit``.

    The cut is made on whole characters of the unescaped value, so neither a multi-byte UTF-8
    sequence nor an escape sequence is ever split. Returns ``(unescaped text, was_cut)``.
    """
    if len(escape(value).encode()) <= limit:
        return value, False
    return _with_marker(value, limit, escape), True


def _with_marker(base: str, limit: int, escape: Callable[[str], str]) -> str:
    """The longest prefix of ``base`` that fits ``limit`` escaped bytes together with the marker."""
    budget = limit - len(MARKER)
    if budget < 0:
        return MARKER[: max(limit, 0)]
    used = 0
    end = 0
    for ch in base:
        used += len(escape(ch).encode())
        if used > budget:
            break
        end += 1
    return base[:end] + MARKER


def shrink_to_fit(
    values: list[str],
    cuttable: list[bool],
    excess: int,
    escape: Callable[[str], str],
) -> bool:
    """Cut the longest cuttable values (in place) until their escaped size dropped by ``excess``
    bytes. A cut value ends with the marker (one marker, even when cut twice); values no longer
    than the marker are left alone. Returns False when cutting everything allowed cannot free
    ``excess`` bytes (the caller then rejects the event)."""
    floor = len(MARKER)
    while excess > 0:
        best = -1
        best_size = floor
        for i, v in enumerate(values):
            if cuttable[i]:
                size = len(escape(v).encode())
                if size > best_size:
                    best, best_size = i, size
        if best < 0:
            return False
        value = values[best]
        base = value[:-floor] if value.endswith(MARKER) else value
        new = _with_marker(base, max(best_size - excess, floor), escape)
        excess -= best_size - len(escape(new).encode())
        values[best] = new
    return True
