"""The PurviewDLP_CL column mapping: valid names, full schema coverage, fast path == rules."""

from __future__ import annotations

import re

import orjson
from hypothesis import given, settings

from forwarder.schema import schema_fields, to_dict, to_json
from forwarder.testing.events import sample_events
from sinks.sentinel.columns import COLUMNS, RESERVED, TABLE_TYPES, to_row, to_row_by_rules
from tests.sentinel.helpers import event, generated_events


def test_column_names_follow_log_analytics_rules():
    names = [c.name for c in COLUMNS]
    assert len(names) == len(set(names))
    assert names[0] == "TimeGenerated" and COLUMNS[0].type == "datetime"
    for name in names:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,44}", name), name
        assert name not in RESERVED
    assert {c.type for c in COLUMNS} <= set(TABLE_TYPES)


def test_every_schema_field_reaches_a_column():
    rules = " ".join(c.rule for c in COLUMNS)
    for field in schema_fields():
        # a leaf is covered by its own rule or by a dynamic column carrying its parent list/object
        parts = field.replace("[]", "").split(".")
        prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
        assert any(re.search(rf"(?<![\w.]){re.escape(p)}(?![\w])", rules) for p in prefixes), field


def test_fast_row_equals_the_rule_interpreter_on_canonical_events():
    for ev in [*sample_events(), event(1)]:
        data = orjson.loads(to_json(ev))
        assert to_row(data) == to_row_by_rules(data)


def test_rows_leave_out_empty_values_but_keep_false_and_zero():
    data = to_dict(event(1, description="", recipients=[]))
    data["override"]["false_positive"] = False
    data["record_type"] = 0
    row = to_row(data)
    assert "Description" not in row and "Recipients" not in row
    assert row["OverrideFalsePositive"] is False and row["RecordType"] == 0


def test_unexpected_shapes_fall_back_to_the_rules():
    data = to_dict(event(1))
    data["policies"] = [{"id": "p", "name": "P", "rules": "not-a-list"}, "junk"]
    row = to_row(data)
    assert row["PolicyNames"] == ["P"]


@settings(max_examples=60, deadline=None)
@given(generated_events())
def test_fast_row_equals_rules_on_generated_events(ev):
    data = orjson.loads(to_json(ev))
    assert to_row(data) == to_row_by_rules(data)
