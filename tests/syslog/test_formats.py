"""CEF, LEEF and JSON formatting and syslog headers, parsed back by the independent parsers
(no network). Hostile strings come from hypothesis."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.schema import DlpEvent, Identity, ObjectRef, PolicyMatch, RuleMatch, from_dict, to_dict, to_json
from sinks.syslog.cef import CEF_MAX_LENGTH, FormatError, format_cef
from sinks.syslog.jsonfmt import format_json
from sinks.syslog.leef import LeefFormatter
from sinks.syslog.truncate import MARKER, cut_bytes, cut_chars
from tests.syslog.expected import SYSLOG_SEV, cef_expected, leef_expected
from tests.syslog.helpers import make_sink, sample_event
from tests.syslog.parsers import parse_cef, parse_leef, parse_syslog

FRAGMENTS = st.sampled_from(
    list("|=\\\r\n\x00\t ^~ab") + ["\U0001f600", "\u00e9", "\u2028", "\x7f", "\x1b", "=\\", " x=y", "\\n", "\ufffd"]
)
hostile = st.one_of(
    st.lists(FRAGMENTS, max_size=30).map("".join),
    st.text(max_size=60),  # any Unicode, non-BMP included (no lone surrogates: they are not UTF-8)
)


def data_of(event: DlpEvent) -> dict:
    return orjson.loads(to_json(event))


def hostile_event(title, description, upn, recipient, policy, action, path, operation) -> DlpEvent:
    e = sample_event(7)
    e.title = title
    e.description = description
    e.user = Identity(upn=upn)
    e.sender = ""
    e.recipients = [recipient, "b@x"]
    e.policies = [PolicyMatch(name=policy, rules=[RuleMatch(name=policy + "r", actions=[action, "Notify"])])]
    e.object = ObjectRef(name=description[:10], path=path, size=5)
    e.operation = operation
    return e


# --------------------------------------------------------------------------- CEF


def test_cef_sample_field_by_field() -> None:
    event = sample_event(3)
    header, ext = parse_cef(format_cef(data_of(event), 8192))
    assert (header, ext) == cef_expected(event)
    assert ext["act"] == "BlockAccess,NotifyUser"
    assert ext["suser"] == "user3@contoso.com"
    assert ext["duser"] == "ext3@fabrikam.com;audit@contoso.com"
    assert ext["fsize"] == "1003"
    assert ext["src"] == "10.1.2.3"
    assert ext["dhost"] == "E:\\USB"
    assert ext["rt"] == "1714564803003"  # 2024-05-01T12:00:03.003Z
    assert ext["cs1Label"] == "DLP Policies" and ext["cs1"] == "PCI DSS"
    assert header[6] == "6"  # medium


def test_cef_ipv6_goes_to_c6a2() -> None:
    event = sample_event(4)  # 2001:db8::7
    _, ext = parse_cef(format_cef(data_of(event), 8192))
    assert "src" not in ext
    assert ext["c6a2"] == "2001:db8::7" and ext["c6a2Label"] == "Source IPv6 Address"


def test_cef_escapes_exactly_per_spec() -> None:
    event = sample_event(1, title="a|b\\c=d", description="x=1 \\ y|z\r\nnext cs1=forged")
    text = format_cef(data_of(event), 8192)
    assert "|a\\|b\\\\c=d|" in text  # header: pipe and backslash escaped, '=' not
    assert "msg=x\\=1 \\\\ y|z\\r\\nnext cs1\\=forged" in text  # extension: '|' not escaped
    _, ext = parse_cef(text)
    assert ext["msg"] == "x=1 \\ y|z\r\nnext cs1=forged"
    assert ext["cs1"] == "PCI DSS"  # not forged


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile, hostile, hostile, hostile, hostile, hostile, hostile, hostile)
def test_cef_hostile_strings_round_trip(title, description, upn, recipient, policy, action, path, operation) -> None:
    event = hostile_event(title, description, upn, recipient, policy, action, path, operation)
    text = format_cef(data_of(event), 60000)
    assert "\n" not in text and "\r" not in text and "\x00" not in text
    header, ext = parse_cef(text)
    exp_header, exp_ext = cef_expected(event)
    assert header == exp_header
    # per-key dictionary lengths apply; compare the cut form where a value was long
    for key, value in exp_ext.items():
        limit = CEF_MAX_LENGTH.get(key)
        if limit and len(value) > limit:
            assert ext[key] == value[: limit - len(MARKER)] + MARKER
        else:
            assert ext[key] == value, key
    assert set(ext) == set(exp_ext)


def test_cef_severity_mapping() -> None:
    got = {}
    for sev in ("unknown", "informational", "low", "medium", "high"):
        header, _ = parse_cef(format_cef(data_of(sample_event(0, severity=sev)), 8192))
        got[sev] = int(header[6])
    assert got == {"unknown": 5, "informational": 1, "low": 3, "medium": 6, "high": 8}


# --------------------------------------------------------------------------- LEEF


@pytest.mark.parametrize("delimiter", ["^", "0x09", "~"])
def test_leef_sample_field_by_field(delimiter: str) -> None:
    event = sample_event(5)
    fmt = LeefFormatter(delimiter)
    header, attrs = parse_leef(fmt.format(data_of(event), 8192))
    assert (header, attrs) == leef_expected(event, fmt.delimiter)
    assert attrs["devTime"] == "2024-05-01T12:00:05.005+0000"
    assert attrs["devTimeFormat"] == "yyyy-MM-dd'T'HH:mm:ss.SSSZ"
    assert attrs["sev"] == "5" and attrs["cat"] == "audit" and attrs["usrName"] == "user5@contoso.com"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile, hostile, hostile, hostile, hostile, hostile, hostile, hostile, st.sampled_from(["^", "0x09", "~"]))
def test_leef_hostile_strings_never_forge_attributes(
    title, description, upn, recipient, policy, action, path, operation, delimiter
) -> None:
    event = hostile_event(title, description, upn, recipient, policy, action, path, operation)
    fmt = LeefFormatter(delimiter)
    text = fmt.format(data_of(event), 60000)
    assert "\n" not in text and "\r" not in text and "\x00" not in text
    header, attrs = parse_leef(text)
    exp_header, exp_attrs = leef_expected(event, fmt.delimiter)
    assert header == exp_header
    for key, value in exp_attrs.items():
        assert attrs[key] == (value if len(value) <= 4000 else value[: 4000 - len(MARKER)] + MARKER), key
    assert set(attrs) == set(exp_attrs)


def test_leef_rejects_ambiguous_delimiters() -> None:
    for bad in ("=", "|", "a", "ab", "0x3d", "\n"):
        with pytest.raises(ValueError):
            LeefFormatter(bad)


# --------------------------------------------------------------------------- JSON


@settings(max_examples=80, deadline=None)
@given(hostile, hostile)
def test_json_round_trips_exactly(title, description) -> None:
    event = sample_event(2, title=title, description=description)
    text = format_json(data_of(event), 60000)
    assert "\n" not in text and "\r" not in text
    assert from_dict(orjson.loads(text)) == event


def test_json_leaves_raw_out_unless_carried() -> None:
    event = sample_event(2, raw={"Operation": "DlpRuleMatch"})
    assert "raw" not in orjson.loads(format_json(data_of(event), 60000))
    assert orjson.loads(format_json(data_of(event), 60000, carry_raw=True))["raw"] == {"Operation": "DlpRuleMatch"}


# --------------------------------------------------------------------------- truncation


long_hostile = st.lists(FRAGMENTS, min_size=200, max_size=2000).map("".join)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(long_hostile, long_hostile, st.integers(min_value=1000, max_value=3000))
def test_cef_cut_to_budget_keeps_escaping_and_utf8(description, path, budget) -> None:
    event = sample_event(9, description=description)
    event.object.path = path
    try:
        text = format_cef(data_of(event), budget)
    except FormatError:
        pytest.fail("an event with short ids must always fit 1000 bytes")
    raw = text.encode()
    assert len(raw) <= budget
    raw.decode("utf-8")  # never a broken sequence
    _, ext = parse_cef(text)  # never a broken escape
    _, exp = cef_expected(event)
    for key in ("msg", "filePath"):
        got = ext.get(key, "")
        if got.endswith(MARKER) and got != exp[key]:
            assert exp[key].startswith(got[: -len(MARKER)]), key
        else:
            assert got == exp[key][: CEF_MAX_LENGTH[key]] or got == exp[key]
    assert ext["cs6"] == event.id and ext["rt"] == exp["rt"]  # ids and times are never cut


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(long_hostile, st.integers(min_value=1000, max_value=3000), st.sampled_from(["^", "0x09"]))
def test_leef_cut_to_budget(description, budget, delimiter) -> None:
    event = sample_event(9, description=description)
    fmt = LeefFormatter(delimiter)
    text = fmt.format(data_of(event), budget)
    assert len(text.encode()) <= budget
    _, attrs = parse_leef(text)
    _, exp = leef_expected(event, fmt.delimiter)
    got = attrs.get("msg", "")
    assert got == exp["msg"] or (got.endswith(MARKER) and exp["msg"].startswith(got[: -len(MARKER)]))
    assert attrs["eventId"] == event.id


@settings(max_examples=60, deadline=None)
@given(long_hostile, st.integers(min_value=2500, max_value=5000))
def test_json_cut_to_budget(description, budget) -> None:
    event = sample_event(9, description=description, title=description)
    text = format_json(data_of(event), budget)
    assert len(text.encode()) <= budget
    got = orjson.loads(text)
    assert got["id"] == event.id and got["event_time"] == event.event_time
    for key in ("description", "title"):
        cut = got[key].endswith(MARKER) and description.startswith(got[key][: -len(MARKER)])
        assert got[key] == description or cut


def test_cut_helpers_never_split_characters_or_escapes() -> None:
    assert cut_chars("abc", 3) == ("abc", False)
    cut, was = cut_chars("x" * 100, 20)
    assert was and len(cut) == 20 and cut.endswith(MARKER)
    value = "\U0001f600" * 50
    text, was = cut_bytes(value, 60, lambda s: s)
    assert was and len(text.encode()) <= 60 and text.endswith(MARKER)
    text, _ = cut_bytes("\\" * 100, 41, lambda s: s.replace("\\", "\\\\"))
    assert text == "\\" * 13 + MARKER  # 13 backslashes = 26 escaped bytes + 14 marker bytes


def test_event_too_big_even_when_cut_is_rejected_by_the_sink() -> None:
    sink = make_sink(host="127.0.0.1", transport="udp", max_message_bytes=480, format="cef")
    event = sample_event(1, id="audit:" + "i" * 600)  # ids are never cut
    with pytest.raises(FormatError):
        sink.encode(data_of(event))


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize("fmt", ["cef", "leef", "json"])
def test_rfc5424_header(fmt: str) -> None:
    sink = make_sink(host="127.0.0.1", format=fmt, hostname="dlp host", app_name="dlpfwd", facility="local4")
    event = sample_event(4)  # high
    fields = parse_syslog(sink.encode(data_of(event)).decode())
    assert fields["ts"] == "2024-05-01T12:00:04.004Z"
    assert fields["host"] == "dlp_host"  # printable ASCII only
    assert fields["app"] == "dlpfwd" and fields["msgid"] == "DlpRuleMatch" and fields["sd"] == "-"
    assert fields["facility"] == "20" and fields["severity"] == str(SYSLOG_SEV["high"])
    assert fields["msg"].startswith({"cef": "CEF:0|", "leef": "LEEF:2.0|", "json": "{"}[fmt])


def test_rfc3164_header_with_and_without_tag() -> None:
    event = sample_event(61, severity="medium")
    for tag, prefix in ((False, "CEF:0|"), (True, "dlpfwd: CEF:0|")):
        sink = make_sink(host="127.0.0.1", header="rfc3164", hostname="collector1", rfc3164_tag=tag)
        fields = parse_syslog(sink.encode(data_of(event)).decode())
        assert fields["ts"] == "May  1 12:01:01" and fields["host"] == "collector1"
        assert fields["msg"].startswith(prefix)
        assert fields["severity"] == "4" and fields["facility"] == "16"


def test_settings_errors_have_key_paths() -> None:
    from forwarder.settings import build
    from sinks.syslog.settings import SyslogSettings

    problems: list[str] = []
    build(SyslogSettings, {"transport": "smoke", "tls": {"verfy": True}}, "sinks[0]", problems)
    assert any(p.startswith("sinks[0].host: required") for p in problems)
    assert any(p.startswith("sinks[0].transport: expected one of") for p in problems)
    assert any(p.startswith("sinks[0].tls.verfy: unknown setting (did you mean verify?)") for p in problems)


def test_schema_round_trip_helper_is_sane() -> None:
    event = sample_event(1)
    assert from_dict(to_dict(event)) == event


@pytest.mark.parametrize("fmt", ["cef", "leef"])
def test_non_string_values_where_the_schema_has_strings_are_written_as_text(fmt: str) -> None:
    data = data_of(sample_event(1))
    data["description"] = 123
    data["user"]["upn"] = 4.5
    data["status"] = True
    data["workload"] = None
    if fmt == "cef":
        _, ext = parse_cef(format_cef(data, 8192))
        assert (ext["msg"], ext["suser"], ext["flexString2"]) == ("123", "4.5", "true")
        assert "deviceFacility" not in ext
    else:
        _, attrs = parse_leef(LeefFormatter().format(data, 8192))
        assert (attrs["msg"], attrs["usrName"], attrs["status"]) == ("123", "4.5", "true")
        assert "workload" not in attrs


def test_an_event_that_cannot_be_formatted_is_rejected_not_retried() -> None:
    from forwarder.sink import Entry

    sink = make_sink(host="127.0.0.1", transport="udp", port=9)
    sink.transport = type("NullTransport", (), {"stream": False, "send": lambda self, frames: None})()
    bad = data_of(sample_event(1))
    bad["policies"] = [{"name": 5, "rules": [{"actions": [1, 2]}]}]  # ints where names are strings
    out = sink.write_batch([Entry(1, orjson.dumps(bad)), Entry(2, to_json(sample_event(2))), Entry(3, b"{not json")])
    assert out.delivered == [2]
    assert set(out.rejected) == {1, 3}
    assert "cannot format the event" in out.rejected[1] and "cannot read" in out.rejected[3]
