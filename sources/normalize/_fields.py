"""Defensive readers for Microsoft JSON: case-insensitive keys, strings-or-numbers, JSON in strings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson


def get(obj: Any, *names: str, default: Any = None) -> Any:
    """The value of the first of ``names`` present in dict ``obj``, whatever the casing of its
    first letter or of the whole name (``From``/``from``, ``FileName``/``fileName``,
    ``ItemCreationTime``/``itemcreationtime``). Spellings that differ inside the name
    (``UniqueId``/``UniqueID``) are passed as separate names. ``None`` values count as absent.

    Every lookup is a dict lookup (no scan of the keys): this runs ~100 times per record.
    """
    if type(obj) is not dict or not obj:
        return default
    lookup = obj.get
    for name in names:  # the spelling as given: the common case
        value = lookup(name)
        if value is not None:
            return value
    variants = _VARIANTS
    for name in names:
        spellings = variants.get(name)
        if spellings is None:
            spellings = _variants(name)
        for variant in spellings:
            value = lookup(variant)
            if value is not None:
                return value
    return default


def _first(obj: Any, names: tuple[str, ...]) -> Any:
    """The value of the first spelling of the first name when present (the common case);
    ``None`` sends the caller to :func:`get`, which tries everything."""
    return obj.get(names[0]) if type(obj) is dict else None


#: name -> its other spellings (names come from the normalizers' code: a small, fixed set).
_VARIANTS: dict[str, tuple[str, ...]] = {}


def _variants(name: str) -> tuple[str, ...]:
    out: list[str] = []
    flipped = name[:1].lower() + name[1:] if name[:1].isupper() else name[:1].upper() + name[1:]
    for v in (flipped, name.lower()):
        if v != name and v not in out:
            out.append(v)
    if len(_VARIANTS) < 4096:
        _VARIANTS[name] = tuple(out)
    return tuple(out)


def text(obj: Any, *names: str) -> str:
    """``get`` as a string (numbers and booleans converted; lists, dicts and absent -> "")."""
    if type(obj) is not dict or not obj:
        return ""
    value = obj.get(names[0])  # fast path: the first spelling is present and a string
    if type(value) is str and value:
        return value
    value = get(obj, *names)
    if type(value) is str:
        return value
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def obj(data: Any, *names: str) -> dict[str, Any]:
    """A nested object; a JSON object encoded as a string is decoded; anything else -> {}."""
    value = _first(data, names)
    if type(value) is dict:
        return value
    return as_object(get(data, *names) if value is None else value)


def as_object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {}
        return decoded if isinstance(decoded, dict) else {}
    return {}


def items(data: Any, *names: str) -> list[Any]:
    """A list value (a single object becomes a one-item list; a JSON array string is decoded)."""
    value = _first(data, names)
    if type(value) is list:
        return value
    if value is None:
        value = get(data, *names)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                decoded = orjson.loads(s)
            except orjson.JSONDecodeError:
                return []
            return decoded if isinstance(decoded, list) else []
        return [value] if s else []
    return [value]


def strings(data: Any, *names: str) -> list[str]:
    """A list of non-empty strings (a ``;`` or ``,`` separated string is split)."""
    value = _first(data, names)
    if value is None:
        value = get(data, *names)
    if value is None:
        return []
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            return [str(v) for v in items(data, *names) if v not in (None, "")]
        sep = ";" if ";" in s else ","
        return [p.strip() for p in s.split(sep) if p.strip()]
    if isinstance(value, list):
        out: list[str] = []
        for v in value:
            if isinstance(v, dict):
                v = get(v, "Address", "EmailAddress", "address", "Name", "Id")
            if v not in (None, ""):
                out.append(str(v))
        return out
    return [str(value)]


def integer(data: Any, *names: str) -> int | None:
    """An integer from a number or a numeric string; ``None`` when absent or not numeric."""
    value = _first(data, names)
    if type(value) is int:
        return value
    if value is None:
        value = get(data, *names)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                return int(float(value.strip()))
            except ValueError:
                return None
    return None


def boolean(data: Any, *names: str) -> bool:
    value = _first(data, names)
    if value is None:
        value = get(data, *names)
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, int | float):
        return bool(value)
    return False


def odd_spellings(lookups: Iterable[tuple[str, ...]]) -> frozenset[str]:
    """The keys that could change what :func:`get` answers for ``lookups`` (each a tuple of
    names, as passed to one call) compared with plain ``dict.get`` of those names in order:
    every other spelling :func:`get` tries, less the names of the same call.

    A dict none of whose keys is in this set answers each of ``lookups`` as the first of its
    names present (not ``None``) by ``dict.get``: the normalizers' fast paths check that once
    per object (``keys().isdisjoint``) instead of trying other spellings for every absent key."""
    out: set[str] = set()
    for names in lookups:
        for name in names:
            out.update(v for v in _variants(name) if v not in names)
    return frozenset(out)
