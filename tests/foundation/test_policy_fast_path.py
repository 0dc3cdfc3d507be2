"""The policy's fast path (walk only the known detection places when the rest of a record holds
no marker) gives exactly the full walk's result, including when markers sit elsewhere."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from forwarder.config import PolicySettings
from forwarder.policy import _MARKERS, SensitiveValuePolicy, _has_marker
from forwarder.settings import Secret
from forwarder.testing.events import rule_match_exchange

CARD = "4111111111111111"


def _policies() -> list[SensitiveValuePolicy]:
    return [
        SensitiveValuePolicy(),
        SensitiveValuePolicy(PolicySettings("mask")),
        SensitiveValuePolicy(PolicySettings("hash", hash_key=Secret("k" * 32))),
    ]


def _dlp_record() -> dict[str, Any]:
    raw = rule_match_exchange().raw
    assert isinstance(raw, dict)
    return raw


def _variants() -> list[dict[str, Any]]:
    """Records with matched values in the known places only, and with markers elsewhere too."""
    plain = _dlp_record()
    context_elsewhere = _dlp_record()
    context_elsewhere["ExchangeMetaData"] = {"Name": "x", "Context": f"card {CARD}"}
    value_elsewhere = _dlp_record()
    value_elsewhere["Extra"] = [{"detected_values": [CARD]}, {"MatchedValue": CARD}]
    embedded = _dlp_record()
    embedded["AuditData"] = orjson.dumps({"DetectedValues": [{"Name": "CC", "Value": CARD}]}).decode()
    other_casing = _dlp_record()
    other_casing["policyDetails"] = other_casing.pop("PolicyDetails")
    in_text = _dlp_record()  # the detections as text where an object was expected: searched with the rest
    sits = in_text["PolicyDetails"][0]["Rules"][0]["ConditionsMatched"]["SensitiveInformation"]
    sits[0]["SensitiveInformationDetections"] = orjson.dumps(sits[0]["SensitiveInformationDetections"]).decode()
    endpoint = {
        "Id": "e1",
        "RecordType": 63,
        "SensitiveInfoTypeData": [
            {"SensitiveInfoTypeName": "CC", "SensitiveInformationDetectionsInfo": {"DetectedValues": [CARD]}}
        ],
    }
    clean = {"Id": "c1", "Operation": "FileRead", "RuleName": "content detected", "List": [1, "a", None]}
    return [plain, context_elsewhere, value_elsewhere, embedded, other_casing, in_text, endpoint, clean]


@pytest.mark.parametrize("index", range(len(_variants())))
def test_fast_path_equals_the_full_walk(index: int) -> None:
    for policy in _policies():
        record = _variants()[index]
        expected = copy.deepcopy(record)
        policy._scrub(expected, 0)  # the full walk, the definition of the result
        assert policy.scrub(record) == expected
        assert orjson.dumps(record) == orjson.dumps(expected)  # key order too
        assert CARD.encode() not in orjson.dumps(record)


def test_a_record_too_deep_to_serialize_is_walked_whole() -> None:
    record: dict[str, Any] = {"DetectedValues": [CARD]}
    node = record
    for _ in range(300):
        node["n"] = {}
        node = node["n"]
    SensitiveValuePolicy().scrub(record)
    assert record["DetectedValues"] == []


def test_the_spelled_out_marker_search_covers_every_marker() -> None:
    for marker in _MARKERS:
        assert _has_marker(b"x" + marker + b"x")
    assert not _has_marker(b'{"conditionsmatched":{},"rulename":"content detected"}')


def test_the_marker_search_checks_every_value_word() -> None:
    """Markers ending in ``value`` are found after other ``value`` words, at the text's edges,
    and not from a head and ``value`` apart."""
    plain = b'{"name":"x","value":"detected","othervalue":"matched value","values":1}'
    assert not _has_marker(plain)
    assert not _has_marker(b"value" + plain + b"valu")
    assert not _has_marker(b"detected value matched-value detectedvalu")
    for marker in (b"detectedvalue", b"detected_value", b"matchedvalue", b"matched_value"):
        assert _has_marker(plain + marker)
        assert _has_marker(plain[:20] + marker + b"s" + plain)
        assert _has_marker(marker)
