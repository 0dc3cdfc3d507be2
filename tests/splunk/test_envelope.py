"""The HEC envelope: metadata per kind, epoch time, CIM DLP fields, our schema spliced in."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from forwarder.schema import Device, ObjectRef, PolicyMatch, RuleMatch, epoch_seconds, to_json
from forwarder.testing.events import hostile_event, sample_events
from sinks.splunk_hec import envelope as envelope_module
from sinks.splunk_hec.envelope import (
    CIM_CONSTANTS,
    CIM_MAPPING,
    CIM_RULES,
    DEFAULT_SOURCETYPES,
    EnvelopeBuilder,
    cim_fields,
)
from tests.splunk.conftest import make_event

ROOT = Path(__file__).resolve().parents[2]

CIM_REQUIRED = {
    "action",
    "app",
    "category",
    "dest",
    "dlp_type",
    "dvc",
    "object",
    "object_category",
    "object_path",
    "severity",
    "signature",
    "src_user",
}


def build(event, **kw):
    payload = to_json(event)
    return orjson.loads(EnvelopeBuilder(host="fwd01", **kw).build(orjson.loads(payload), payload))


def test_envelope_carries_metadata_time_and_the_whole_event():
    event = make_event(1)
    env = build(event, index="dlp")
    assert env["time"] == epoch_seconds("2026-11-23T10:00:00.25Z") == 1795428000.25
    assert env["sourcetype"] == "dlpfwd:purview:audit"
    assert env["index"] == "dlp"
    assert env["host"] == "fwd01"
    assert env["source"] == "dlpfwd:contoso-audit"
    assert env["event"]["dlpfwd"] == orjson.loads(to_json(event))
    assert env["event"]["dlpfwd"]["idempotency_key"] == "rec-1@2026-11-23T10:00:00Z"
    assert "fields" not in env


def test_distinct_sourcetypes_and_indexes_per_kind():
    kinds = {"alert": "dlpfwd:purview:alert", "incident": "dlpfwd:purview:incident", "audit": "dlpfwd:purview:audit"}
    assert len(set(DEFAULT_SOURCETYPES.values())) == len(DEFAULT_SOURCETYPES)
    for kind, sourcetype in kinds.items():
        env = build(
            make_event(1, kind=kind),
            index="main",
            indexes={"alert": "dlp_alerts"},
            sources={"incident": "purview:incidents"},
            hosts={"alert": "graph"},
        )
        assert env["sourcetype"] == sourcetype
        assert env["index"] == ("dlp_alerts" if kind == "alert" else "main")
        assert env["source"] == ("purview:incidents" if kind == "incident" else "dlpfwd:contoso-audit")
        assert env["host"] == ("graph" if kind == "alert" else "fwd01")
    env = build(make_event(1, kind="incident"), sourcetypes={"incident": "custom:inc"})
    assert env["sourcetype"] == "custom:inc"
    assert "index" not in env  # the token's default index applies


def test_time_falls_back_and_is_omitted_when_unreadable():
    env = build(make_event(1, event_time="", updated_time="2026-11-23T10:00:01Z"))
    assert env["time"] == 1795428001.0
    env = build(make_event(1, event_time="garbage", updated_time="", ingest_time=""))
    assert "time" not in env


def test_cim_fields_for_a_blocked_email():
    fields = cim_fields(orjson.loads(to_json(make_event(1))))
    assert CIM_REQUIRED <= set(fields)
    assert set(fields) == set(CIM_MAPPING) | set(CIM_CONSTANTS) == set(CIM_RULES)
    assert fields["action"] == "blocked"
    assert fields["dlp_type"] == "email"
    assert fields["app"] == "Exchange"
    assert fields["src_user"] == "alice@contoso.com"
    assert fields["user"] == ["bob@fabrikam.com"]
    assert fields["dest"] == ["bob@fabrikam.com"]
    assert fields["object"] == "Q3 numbers"
    assert fields["object_category"] == "email"
    assert fields["category"] == ["Credit Card Number"]
    assert fields["severity"] == "high" and fields["severity_id"] == 4
    assert fields["signature"] == "Credit cards"
    assert fields["signature_id"] == "r1"
    assert fields["vendor_product"] == "Microsoft Purview DLP"


def test_cim_fields_for_an_overridden_endpoint_copy():
    event = make_event(
        2,
        workload="Endpoint",
        operation="FileCopiedToRemovableMedia",
        recipients=[],
        sender="",
        object=ObjectRef(type="file", name="plan.xlsx", path="C:\\Users\\alice\\plan.xlsx"),
        device=Device(name="LAPTOP-7", application="explorer.exe", target="USB drive E:"),
        policies=[
            PolicyMatch(
                name="USB",
                rules=[RuleMatch(id="r9", actions=["BlockAccess"], overridden_actions=["blockaccess"])],
            )
        ],
    )
    fields = cim_fields(orjson.loads(to_json(event)))
    assert fields["action"] == "allowed"
    assert fields["dlp_type"] == "endpoint"
    assert fields["dvc"] == "LAPTOP-7"
    assert fields["app"] == "explorer.exe"
    assert fields["dest"] == "USB drive E:"
    assert fields["object_path"] == "C:\\Users\\alice\\plan.xlsx"
    assert fields["user"] == "alice@contoso.com"


def test_cim_fields_never_empty_for_a_sparse_alert():
    fields = cim_fields({"kind": "alert", "title": "DLP policy match", "id": "a1"})
    assert all(value not in ("", None, []) for value in fields.values())
    assert fields["signature"] == "DLP policy match"
    assert fields["action"] == "unknown"


def test_indexed_fields_are_flat():
    env = build(make_event(1), fields=["tenant_id", "user.upn", "recipients", "policies", "object.size", "nope"])
    assert env["fields"] == {
        "tenant_id": "contoso-tenant",
        "user.upn": "alice@contoso.com",
        "recipients": ["bob@fabrikam.com"],
    }


def test_cim_mapping_is_documented():
    from forwarder.testing import check_mapping_table

    doc = ROOT / "docs" / "schema.md"
    check_mapping_table(doc, "Splunk CIM Data Loss Prevention", CIM_MAPPING, constants=CIM_CONSTANTS)


def _both_paths(payload: bytes, **kw) -> tuple[bytes, bytes]:
    builder = EnvelopeBuilder(host="fwd01", **kw)
    return builder.envelope(payload), builder.build(orjson.loads(payload), payload)


def test_fast_path_builds_the_same_envelope_as_the_dict_path(monkeypatch):
    """envelope() decodes the payload into typed structs (msgspec); it must give exactly what the
    reference dict path (orjson.loads + cim_fields) gives, and be taken for schema payloads."""
    calls = []
    fast = envelope_module.cim_fields_of
    monkeypatch.setattr(envelope_module, "cim_fields_of", lambda ev: calls.append(1) or fast(ev))
    events = sample_events() + [hostile_event(i) for i in range(5)]
    events += [make_event(i, kind=kind) for i, kind in enumerate(["audit", "alert", "incident", "correlation", ""])]
    blocked_then_overridden = make_event(7)
    blocked_then_overridden.policies = [
        PolicyMatch(
            id="p", name="", rules=[RuleMatch(id="", actions=["BlockAccess"], overridden_actions=["blockaccess"])]
        )
    ]
    blocked_then_overridden.title = ""
    events.append(blocked_then_overridden)
    for event in events:
        payload = to_json(event)
        fast_env, dict_env = _both_paths(payload, index="dlp", sources={"alert": "graph"})
        assert fast_env == dict_env, event.id
    assert len(calls) == len(events)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"kind":"audit","severity":null,"user":null,"recipients":[null,"a@b"]}',
        b'{"kind":"alert","title":"t","policies":[{"name":"p","rules":[{"id":"r","actions":null}]}]}',
        b'{"id":"x","event_time":"garbage","updated_time":"2026-11-23T10:00:01Z","object":{"size":5}}',
        b'{"id":"y","sensitive_types":[{"name":"","id":"sit"}],"workload":"Endpoint","device":{"name":"pc"}}',
        b'  {"id":"z","kind":"incident"}\n',
    ],
)
def test_unusual_payloads_give_the_dict_path_envelope(payload):
    fast_env, dict_env = _both_paths(payload)
    assert fast_env == dict_env


@pytest.mark.parametrize("payload", [b"[1,2]", b'{"id":', b'"text"'])
def test_payloads_that_are_not_objects_raise(payload):
    with pytest.raises(Exception):  # noqa: B017 - the sink dead-letters whatever it is
        EnvelopeBuilder(host="fwd01").envelope(payload)


def test_indexed_fields_take_the_dict_path():
    payload = to_json(make_event(1))
    fast_env, dict_env = _both_paths(payload, fields=["tenant_id", "user.upn"])
    assert fast_env == dict_env and orjson.loads(fast_env)["fields"]["user.upn"]


def test_epoch_needs_no_rounding():
    """_epoch skips round(x, 6) (2 us a call): datetime.timestamp() already gives the float
    nearest to the microsecond decimal, which is what the rounding returned."""
    import datetime as dt
    import random

    from sinks.splunk_hec.envelope import _epoch

    rand = random.Random(6)
    for _ in range(20_000):
        moment = dt.datetime.fromtimestamp(rand.randint(0, 4_102_444_800), dt.UTC)
        moment = moment.replace(microsecond=rand.randint(0, 999_999))
        for text in (moment.isoformat(), moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"):
            when = _epoch(text)
            assert when is not None and round(when, 6) == when, text
    assert _epoch("2026-11-23T10:00:00.25Z") == 1795428000.25
    assert _epoch("garbage") is None


def test_envelope_from_a_view_into_a_spool_buffer_equals_from_bytes():
    builder = EnvelopeBuilder(host="fwd01")
    payload = to_json(make_event(1))
    segment = b"[other rows]" + payload + b"[more]"
    view = memoryview(segment)[12 : 12 + len(payload)]
    assert builder.envelope(view) == builder.envelope(payload)
    assert builder.envelope(memoryview(b" " + payload + b"\n")) == builder.envelope(payload)
    odd = b'{"id":"z","severity":null}'  # the dict path
    assert builder.envelope(memoryview(odd)) == builder.envelope(odd)
