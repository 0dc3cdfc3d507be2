"""packaging/qradar: the Log Source Extensions' and custom properties' patterns, applied to
dlpfwd's own CEF and LEEF output (hostile values included), extract exactly the event's values."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.schema import DlpEvent, to_json
from tests.syslog.expected import cef_expected, leef_expected
from tests.syslog.helpers import make_sink, sample_event

QRADAR = Path(__file__).resolve().parents[2] / "packaging" / "qradar"
NS = "{event_parsing/device_extension}"

text_values = st.one_of(
    st.lists(st.sampled_from(list("|=\\\r\n ^ab") + [" k=v", "\U0001f600", "x\\=y"]), max_size=20).map("".join),
    st.text(max_size=30),
)


def load_extension(name: str) -> tuple[dict[str, re.Pattern[str]], list[ET.Element]]:
    root = ET.parse(QRADAR / name).getroot()
    assert root.tag == f"{NS}device-extension"
    patterns = {p.get("id", ""): re.compile((p.text or "").strip()) for p in root.iter() if p.tag.endswith("pattern")}
    groups = [g for g in root.iter() if g.tag.endswith("match-group")]
    assert groups, "no match-group"
    for g in groups:
        for m in g:
            assert m.get("pattern-id") in patterns, f"matcher refers to unknown pattern {m.get('pattern-id')}"
    return patterns, [m for g in groups for m in g if m.tag.endswith("matcher")]


def extract(patterns, matchers, message: str) -> dict[str, str]:
    out = {}
    for m in matchers:
        found = patterns[m.get("pattern-id")].search(message)
        if found:
            out[m.get("field")] = found.group(int(m.get("capture-group", "1")))
    return out


def cef_unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), value)


def message(event: DlpEvent, fmt: str) -> str:
    sink = make_sink(host="127.0.0.1", format=fmt, hostname="dlpfwd1")
    return sink.encode(orjson.loads(to_json(event))).decode()


def forged() -> DlpEvent:
    """Header text that looks like keys: CEF does not escape '=' in the header, LEEF has no escapes."""
    event = sample_event(5, title="x cat=forged suser=evil src=6.6.6.6 rt=1111111111111")
    event.operation = "Op^cat=forged^usrName=evil^devTime=never"
    return event


def hostile(title: str, upn: str, policy: str) -> DlpEvent:
    event = sample_event(2, title=title, description=title + upn)
    event.user.upn = upn
    event.policies[0].name = policy
    return event


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text_values, text_values, text_values)
def test_cef_extension_extracts_the_event(title, upn, policy) -> None:
    patterns, matchers = load_extension("dlpfwd-cef-lsx.xml")
    for event in (sample_event(1), sample_event(4), forged(), hostile(title, upn, policy)):
        header, ext = cef_expected(event)
        got = extract(patterns, matchers, message(event, "cef"))
        assert cef_unescape(got["EventName"].replace("\\|", "|")) == header[4]
        assert got["EventCategory"] == event.kind
        assert cef_unescape(got.get("UserName", "")) == ext.get("suser", "")
        assert got.get("SourceIp", "") == ext.get("src", "")
        assert got.get("SourceIpv6", "") == ext.get("c6a2", "")
        assert got["DeviceTime"] == ext["rt"]
        assert cef_unescape(got.get("IdentityHostName", "")) == ext.get("shost", "")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text_values, text_values, text_values)
def test_leef_extension_extracts_the_event(title, upn, policy) -> None:
    patterns, matchers = load_extension("dlpfwd-leef-lsx.xml")
    for event in (sample_event(1), sample_event(4), forged(), hostile(title, upn, policy)):
        header, attrs = leef_expected(event)
        got = extract(patterns, matchers, message(event, "leef"))
        assert got["EventName"] == header[4]
        assert got["EventCategory"] == event.kind
        assert got.get("UserName", "") == attrs.get("usrName", "")
        assert got.get("SourceIp", "") == (attrs.get("src", "") if "." in attrs.get("src", "") else "")
        assert got["DeviceTime"] == attrs["devTime"]
        assert got.get("IdentityHostName", "") == attrs.get("deviceName", "")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text_values, text_values, text_values)
def test_custom_properties_extract_the_event(title, upn, policy) -> None:
    spec = json.loads((QRADAR / "custom-properties.json").read_text())
    for event in (sample_event(3), forged(), hostile(title, upn, policy)):
        _, ext = cef_expected(event)
        _, attrs = leef_expected(event)
        cef, leef = message(event, "cef"), message(event, "leef")
        for prop in spec["properties"]:
            found = re.search(prop["regex_cef"], cef)
            assert (cef_unescape(found.group(1)) if found else "") == ext.get(prop["cef"], ""), prop["name"]
            found = re.search(prop["regex_leef"], leef)
            assert (found.group(1) if found else "") == attrs.get(prop["leef"], ""), prop["name"]
