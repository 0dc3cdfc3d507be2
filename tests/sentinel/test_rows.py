"""encode_row (msgspec, payload -> row JSON) gives exactly the row of the reference to_row."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings

from forwarder.schema import Label, PolicyMatch, RuleMatch, to_dict, to_json
from forwarder.testing.events import hostile_event, sample_events
from sinks.sentinel.columns import COLUMNS, to_row
from sinks.sentinel.rows import _Row, encode_row
from tests.sentinel.helpers import event, generated_events


def reference(payload: bytes) -> dict:
    return to_row(orjson.loads(payload))


def test_row_struct_has_every_column_but_the_trimming_note():
    assert set(_Row.__struct_fields__) == {c.name for c in COLUMNS} - {"TrimmedFields"}


def test_equal_to_to_row_on_sample_and_hostile_events():
    events = [*sample_events(), *(hostile_event(i) for i in range(10)), event(1)]
    for ev in events:
        payload = to_json(ev)
        body = encode_row(payload)
        assert body is not None, ev.id
        assert orjson.loads(body) == reference(payload), ev.id


def test_empty_values_left_out_false_and_zero_kept():
    data = to_dict(event(1, description="", recipients=[], labels=[Label(id="", name="L")]))
    data["override"]["false_positive"] = False
    data["record_type"] = 0
    data["object"]["size"] = 0
    data["raw"] = {"Workload": "Exchange"}
    data["enrichment"] = {}
    payload = orjson.dumps(data)
    row = orjson.loads(encode_row(payload) or b"")
    assert row == reference(payload)
    assert "Description" not in row and "Recipients" not in row and "Enrichment" not in row
    assert row["OverrideFalsePositive"] is False and row["RecordType"] == 0 and row["ObjectSize"] == 0
    assert row["LabelNames"] == ["L"] and "LabelIds" not in row
    assert row["RawRecord"] == {"Workload": "Exchange"}


@pytest.mark.parametrize(
    "payload",
    [
        b'{"id":"a","severity":null}',
        b'{"id":"a","policies":[{"id":"p","rules":"not-a-list"},"junk"]}',
        b'{"id":"a","sensitive_types":[{"name":"n","count":1.5}]}',
        b'{"id":"a","recipients":[null,"x"]}',
        b'{"id":"a","user":null}',
        b"[1,2]",
    ],
)
def test_other_shapes_are_left_to_to_row(payload):
    assert encode_row(payload) is None


@pytest.mark.parametrize(
    "payload",
    [
        b'{"id":"a"}',
        b'{"id":"a","policies":[],"sensitive_types":[],"enrichment":{ },"raw":null,"extra":{"x":[1]}}',
        b'{"id":"a","severity":"HIGH","override":{},"object":{"size":null}}',
        b'{"id":"a","raw":false,"enrichment":{"k":"v"}}',
        b'{"id":"a","policies":[{"id":"p","name":"","rules":[{"id":"r","actions":["A","A"]},{"actions":["B"]}]}]}',
    ],
)
def test_sparse_payloads_match(payload):
    body = encode_row(payload)
    assert body is not None
    assert orjson.loads(body) == reference(payload)


@settings(max_examples=80, deadline=None)
@given(generated_events())
def test_equal_to_to_row_on_generated_events(ev):
    payload = to_json(ev)
    body = encode_row(payload)
    assert body is not None
    assert orjson.loads(body) == reference(payload)


def test_a_view_into_a_spool_buffer_encodes_like_bytes():
    payload = to_json(event(1))
    segment = b"[other rows]" + payload + b"[more]"
    assert encode_row(memoryview(segment)[12 : 12 + len(payload)]) == encode_row(payload)


def test_derived_columns_cached_by_value_and_bounded():
    """Recurring policies/sensitive types reuse their derived columns; a different value never
    gets another's columns; the caches stay bounded and do not keep large values."""
    from sinks.sentinel import rows

    def policies(n: int) -> list[PolicyMatch]:
        return [PolicyMatch(id=f"p{n}", name=f"Policy {n}", rules=[RuleMatch(id=f"r{n}", name=f"Rule {n}")])]

    for n in [1, 2, 1, 3, 2]:
        ev = event(n, policies=policies(n))
        body = encode_row(to_json(ev))
        assert body is not None
        assert orjson.loads(body) == orjson.loads(orjson.dumps(to_row(to_dict(ev))))
        assert orjson.loads(body)["PolicyIds"] == [f"p{n}"]
    for n in range(rows._CACHE_SIZE + 10):
        encode_row(to_json(event(n, policies=policies(n))))
    assert 0 < len(rows._POLICY_CACHE) <= rows._CACHE_SIZE
    big = event(1, policies=[PolicyMatch(id="p" * 3000, name="Big")])
    rows._POLICY_CACHE.clear()
    body = encode_row(to_json(big))
    assert body is not None and orjson.loads(body)["PolicyIds"] == ["p" * 3000]
    assert not rows._POLICY_CACHE
