"""The Management Activity normalizer's fast path gives exactly the reference path's event.

``normalize_audit_record`` takes a fast path for records in the documented shape and falls
back on ``_normalize_general`` (the defensive readers) for anything else. These tests compare
both on generated tenant records and on every hand-built record with each key deleted,
re-spelled or given a value of another type, at every depth.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from emulators.tenant import catalog
from emulators.tenant.config import EmulatorConfig
from emulators.tenant.generator import Dataset
from forwarder.errors import MalformedRecord
from forwarder.schema import to_json
from forwarder.source import NormalizeContext
from sources.normalize import _fields
from sources.normalize import management_activity as ma
from tests.sources import records as R

CTX = NormalizeContext(
    source="contoso",
    source_type="management_activity",
    tenant_id=R.TENANT,
    sit_names={R.SSN: "U.S. Social Security Number (SSN)", catalog.SITS[0].id: catalog.SITS[0].name},
    ingest_time="2026-11-21T00:00:00Z",
)


def _outcome(fn: Any, record: Any) -> tuple[str, Any]:
    try:
        events = fn(copy.deepcopy(record), CTX)
    except MalformedRecord as exc:
        return "malformed", str(exc)
    return "ok", [to_json(e) for e in events]


def _same(record: Any) -> None:
    assert _outcome(ma.normalize_audit_record, record) == _outcome(ma._normalize_general, record), record


def test_generated_records_take_the_fast_path_and_match():
    ds = Dataset(EmulatorConfig(seed=3, audit_records=1500, days=2), 1_790_000_000.0, "t1")
    fast = 0
    for i in range(ds.n):
        for detections in (True, False):
            record = orjson.loads(orjson.dumps(ds.record(i, detections)))
            _same(record)
            try:
                ma._normalize_fast(record, CTX)
                fast += 1
            except (ma._Irregular, MalformedRecord):
                pass
    assert fast >= 0.95 * 2 * ds.n  # the documented shape is the fast path's


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*path, i))


def _mutations(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path in _paths(record):
        *parent_path, key = path
        for how in ("delete", "lower", "flip", "none", "str", "int", "list", "json", "empty", "bool"):
            rec = copy.deepcopy(record)
            parent: Any = rec
            for p in parent_path:
                parent = parent[p]
            value = parent[key]
            if isinstance(parent, list):
                if how in ("delete", "lower", "flip"):
                    continue
            elif how == "delete":
                del parent[key]
                yield rec
                continue
            elif how in ("lower", "flip"):
                if not isinstance(key, str) or not key:
                    continue
                new = key.lower() if how == "lower" else key[:1].swapcase() + key[1:]
                if new == key:
                    continue
                parent[new] = parent.pop(key)
                yield rec
                continue
            parent[key] = {
                "none": None,
                "str": str(value),
                "int": 7,
                "list": [value],
                "json": orjson.dumps(value).decode(),
                "empty": "",
                "bool": True,
            }[how]
            yield rec


@pytest.mark.parametrize("record", R.ALL_AUDIT, ids=lambda r: f"{r['Workload']}-{r['Operation']}")
def test_every_mutation_of_hand_built_records_matches(record):
    _same(record)
    for mutated in _mutations(record):
        _same(mutated)


def test_the_fast_path_knows_every_lookup_of_the_general_path(monkeypatch):
    """``_ODD`` is derived from ``_LOOKUPS``: a lookup the general path makes that is missing
    there could make the two paths differ on a record spelled another way."""
    seen: set[tuple[str, ...]] = set()

    def spy(reader: Any) -> Any:
        def wrapped(data: Any, *names: str, **kw: Any) -> Any:
            seen.add(names)
            return reader(data, *names, **kw)

        return wrapped

    for name in ("text", "get", "obj", "items", "strings", "integer", "boolean"):
        monkeypatch.setattr(ma, name, spy(getattr(_fields, name)))
    for record in R.ALL_AUDIT:
        ma._normalize_general(copy.deepcopy(record), CTX)
        for mutated in _mutations(record):
            try:
                ma._normalize_general(mutated, CTX)
            except MalformedRecord:
                pass
    assert seen <= set(ma._LOOKUPS), sorted(seen - set(ma._LOOKUPS))
