"""Every documented HEC status code maps to one action; docs/splunk.md lists them and the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from forwarder.settings import describe
from sinks.splunk_hec import classify as cl
from sinks.splunk_hec.sink import SplunkHecSettings

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    0: cl.OK,
    1: cl.FATAL,
    2: cl.FATAL,
    3: cl.FATAL,
    4: cl.FATAL,
    5: cl.DATA,
    6: cl.DATA,
    7: cl.FATAL,
    8: cl.RETRY,
    9: cl.RETRY,
    10: cl.FATAL,
    11: cl.CHANNEL,
    12: cl.DATA,
    13: cl.DATA,
    14: cl.FATAL,
    15: cl.DATA,
    16: cl.FATAL,
    18: cl.RETRY,
    19: cl.RETRY,
    20: cl.RETRY,
    24: cl.OK,
    25: cl.OK,
}
STATUS = {0: 200, 1: 403, 2: 401, 3: 401, 4: 403, 8: 500, 9: 503, 18: 503, 19: 503, 20: 503, 24: 200, 25: 200}


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_every_documented_code_is_classified(code):
    body = {"text": cl.CODES[code], "code": code}
    verdict = cl.classify(STATUS.get(code, 400), body, sink="splunk", ack=False)
    assert verdict.action == EXPECTED[code]
    assert f"code {code}" in verdict.message
    assert bool(verdict.warning) == (code in cl.WARNING_CODES)
    if verdict.action == cl.FATAL:
        assert "sinks.splunk" in verdict.message or code == 16


@pytest.mark.parametrize(
    ("status", "action"),
    [(413, cl.SPLIT), (429, cl.RETRY), (502, cl.RETRY), (504, cl.RETRY), (404, cl.FATAL), (400, cl.RETRY)],
)
def test_http_statuses_without_a_hec_body(status, action):
    assert cl.classify(status, {}, sink="splunk", ack=False).action == action


def test_invalid_event_number_and_ack_id_are_read():
    verdict = cl.classify(
        400, {"text": "Invalid data format", "code": 6, "invalid-event-number": 3}, sink="s", ack=False
    )
    assert verdict.invalid_event == 3
    assert cl.classify(200, {"text": "Success", "code": 0, "ackId": 7}, sink="s", ack=True).ack_id == 7
    missing = cl.classify(200, {"text": "Success", "code": 0}, sink="s", ack=True)
    assert missing.action == cl.FATAL and "useACK" in missing.message


def test_unparseable_bodies_are_empty():
    assert cl.parse_body(b"<html>") == {} and cl.parse_body(b"[1]") == {} and cl.parse_body(b"") == {}


def test_docs_list_every_setting_and_code():
    text = (ROOT / "docs" / "splunk.md").read_text()
    for key, *_ in describe(SplunkHecSettings):
        assert f"`{key}`" in text, key
    for code in EXPECTED:
        assert f"/ {code}" in text or f", {code}" in text or f"{code}," in text, code


def test_an_undocumented_code_is_retried_not_dead_lettered():
    verdict = cl.classify(400, {"text": "Something new", "code": 24}, sink="s", ack=False)
    assert verdict.action == cl.RETRY and "unexpected" in verdict.message


def test_the_docs_example_configuration_is_valid(monkeypatch):
    import re

    from forwarder.config import parse_config
    from forwarder.plugins import PluginHost

    text = (ROOT / "docs" / "splunk.md").read_text()
    example = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    monkeypatch.setenv("SPLUNK_HEC_TOKEN", "00000000-0000-4000-8000-000000000000")
    config = parse_config(example, PluginHost().load(allow=["splunk_hec"]))
    (sink,) = config.sinks
    assert sink.settings.ack and sink.settings.index_by_kind == {"incident": "dlp_incidents"}
    assert sink.settings.token.reveal().startswith("0000") and sink.options.batch.max_events == 500
