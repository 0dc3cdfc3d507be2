"""The sensitive-value policy scrubs matched values everywhere before sinks see events."""

from __future__ import annotations

import copy
import hashlib
import hmac

import pytest

from forwarder.config import PolicySettings
from forwarder.policy import SensitiveValuePolicy
from forwarder.schema import DlpEvent, to_json
from forwarder.settings import Secret
from forwarder.testing.events import rule_match_exchange

CARDS = (b"4111111111111111", b"5500000000000004")


def test_default_policy_drops_every_matched_value() -> None:
    event = rule_match_exchange()
    SensitiveValuePolicy().apply(event)
    blob = to_json(event)
    assert not any(card in blob for card in CARDS)
    assert event.sensitive_types[0].detected_values == []
    detections = event.raw["PolicyDetails"][0]["Rules"][0]["ConditionsMatched"]["SensitiveInformation"][0]
    assert detections["SensitiveInformationDetections"] == {"DetectedValues": [], "ResultsTruncated": False}
    # counts and names survive
    assert event.sensitive_types[0].count == 2 and event.sensitive_types[0].name == "Credit Card Number"


def test_mask_keeps_the_last_four_characters_only() -> None:
    event = rule_match_exchange()
    SensitiveValuePolicy(PolicySettings("mask")).apply(event)
    assert [v.value for v in event.sensitive_types[0].detected_values] == ["****1111", "****0004"]
    assert not any(card in to_json(event) for card in CARDS)
    assert SensitiveValuePolicy(PolicySettings("mask")).transform("123") == "****"


def test_hash_is_a_keyed_hmac() -> None:
    event = rule_match_exchange()
    SensitiveValuePolicy(PolicySettings("hash", Secret("k3y-material"))).apply(event)
    expected = hmac.new(b"k3y-material", b"4111111111111111", hashlib.sha256).hexdigest()
    assert event.sensitive_types[0].detected_values[0].value == f"hmac-sha256:{expected}"
    raw_values = event.raw["PolicyDetails"][0]["Rules"][0]["ConditionsMatched"]["SensitiveInformation"][0][
        "SensitiveInformationDetections"
    ]["DetectedValues"]
    assert raw_values[0] == {"Name": "Credit Card Number", "Value": f"hmac-sha256:{expected}"}
    assert not any(card in to_json(event) for card in CARDS)


def test_hash_without_key_is_refused() -> None:
    with pytest.raises(ValueError):
        SensitiveValuePolicy(PolicySettings("hash"))


@pytest.mark.parametrize("mode", ["drop", "mask", "hash"])
def test_values_are_found_at_any_depth_and_any_key_case(mode: str) -> None:
    raw = {
        "a": [{"b": {"detectedvalues": [{"name": "SSN", "value": "078-05-1120", "context": "ssn 078-05-1120 x"}]}}],
        "Endpoint": {"SensitiveInfoTypeData": [{"DETECTEDVALUES": ["078-05-1120"], "MatchedValue": "078-05-1120"}]},
        "ExceptionInfo": {"Justification": "kept"},
    }
    event = DlpEvent(id="x", raw=copy.deepcopy(raw))
    SensitiveValuePolicy(PolicySettings(mode, Secret("key") if mode == "hash" else None)).apply(event)
    assert b"078-05-1120" not in to_json(event)
    assert event.raw["ExceptionInfo"] == {"Justification": "kept"}


def test_hostile_nesting_never_crashes() -> None:
    deep: dict = {}
    node = deep
    for _ in range(500):
        node["n"] = {}
        node = node["n"]
    node["DetectedValues"] = [{"Value": "secret-at-depth"}]
    event = DlpEvent(id="deep", raw={"x": deep, "odd": [None, 1, "s", {"DetectedValues": "a-string"}]})
    SensitiveValuePolicy().apply(event)  # must not raise
    assert event.raw["odd"][3]["DetectedValues"] == []


@pytest.mark.parametrize("mode", ["drop", "mask"])
def test_values_inside_embedded_json_text_are_scrubbed(mode: str) -> None:
    import orjson

    inner = {"SensitiveInformationDetections": {"DetectedValues": [{"Name": "SSN", "Value": "078-05-1120"}]}}
    event = DlpEvent(
        id="x",
        raw={
            "AuditData": orjson.dumps(inner).decode(),
            "Note": "DetectedValues: 078-05-1120 (not JSON)",
            "ExceptionInfo": '{"Justification": "ok"}',
        },
    )
    SensitiveValuePolicy(PolicySettings(mode)).apply(event)
    assert b"078-05-1120" not in to_json(event)
    assert orjson.loads(event.raw["AuditData"])["SensitiveInformationDetections"]["DetectedValues"] is not None
    assert event.raw["Note"].startswith("[removed by dlpfwd")
    assert event.raw["ExceptionInfo"] == '{"Justification": "ok"}'
