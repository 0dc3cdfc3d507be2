"""The webhook sink: documented payload, HMAC signature, batching modes and classification,
against a receiver that verifies signatures with the shared helper."""

from __future__ import annotations

import logging
import time

import orjson
import pytest

from emulators.httpd import App, Request, Response
from forwarder.errors import ConfigError
from forwarder.settings import build
from forwarder.sink import SinkContext
from sinks.webhook import InvalidSignature, sign, verify_signature
from sinks.webhook.settings import WebhookSettings
from sinks.webhook.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER
from sinks.webhook.sink import WebhookSink

from .conftest import SECRET_VALUE, alert, entries, incident

KEY = "whsec-test-key"


class Receiver(App):
    """A webhook receiver: verifies the signature (401 and nothing stored when it fails)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[dict[str, str], object]] = []
        self.refused: list[str] = []
        self.script: list[Response] = []  # answers to give before accepting
        self.refuse_if: bytes = b""
        self.route("POST", "/hook", self.hook)

    def hook(self, request: Request) -> Response:
        try:
            verify_signature(request.body, request.header(TIMESTAMP_HEADER), request.header(SIGNATURE_HEADER), KEY)
        except InvalidSignature as exc:
            self.refused.append(exc.reason)
            return Response.json({"error": exc.reason}, 401)
        if self.script:
            return self.script.pop(0)
        if self.refuse_if and self.refuse_if in request.body:
            return Response.json({"error": "unprocessable"}, 422)
        self.received.append((dict(request.headers), orjson.loads(request.body)))
        return Response.empty(204)


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def hook_server(receiver, mount):
    return mount(receiver)


def make_webhook(server, **overrides) -> WebhookSink:
    data = {"url": f"{server.url}/hook", "secret": KEY, "http": {"ca_bundle": server.ca_file}}
    data.update(overrides)
    data = {k: v for k, v in data.items() if v is not None}
    problems: list[str] = []
    settings = build(WebhookSettings, data, "sinks.hook", problems)
    assert not problems, problems
    return WebhookSink("hook", settings, SinkContext("hook", logging.getLogger("t.hook")))


def test_verify_signature_accepts_fresh_and_refuses_tampered_old_or_missing():
    body = b'{"a":1}'
    now = 1_763_892_000.0
    headers = sign(body, KEY, now=now)
    ts, sig = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    verify_signature(body, ts, sig, KEY, now=now + 10)
    verify_signature(body, ts, f"sha256={'0' * 64},{sig}", ["old-key", KEY], now=now)  # rotation
    cases = [
        ((b'{"a":2}', ts, sig, KEY), "does not match"),
        ((body, ts, sig, "other-key"), "does not match"),
        ((body, str(int(now) - 301), sig, KEY), "old"),
        ((body, str(int(now) + 301), sig, KEY), "in the future"),
        ((body, None, sig, KEY), "missing"),
        ((body, ts, None, KEY), "missing"),
        ((body, "yesterday", sig, KEY), "Unix seconds"),
        ((body, ts, "md5=abc", KEY), "no sha256"),
    ]
    for args, reason in cases:
        with pytest.raises(InvalidSignature, match=reason):
            verify_signature(*args, now=now)
    # the replayed body with a fresh timestamp but the old signature does not verify either
    with pytest.raises(InvalidSignature):
        verify_signature(body, str(int(now) + 100), sig, KEY, now=now + 100)


def test_one_signed_post_per_event_with_the_documented_payload(hook_server, receiver):
    sink = make_webhook(hook_server)
    out = sink.write_batch(entries(incident(), alert("da1")))
    assert out.delivered == [1, 2]
    assert len(receiver.received) == 2 and not receiver.refused
    headers, body = receiver.received[0]
    assert headers["idempotency-key"] == "incident:42@2026-11-23T10:05:00Z"
    assert headers["x-dlpfwd-event-id"] == "incident:42"
    assert headers["content-type"] == "application/json"
    assert abs(int(headers["x-dlpfwd-timestamp"]) - time.time()) < 60
    assert body["id"] == "incident:42" and body["schema_version"] == "1.0"
    assert body["links"]["incident"].startswith("https://security.microsoft.com/incidents/42")
    assert body["sensitive_types"][0]["name"] == "Credit Card Number"
    assert "detected_values" not in body["sensitive_types"][0]
    assert "raw" not in body or body["raw"] is None
    assert SECRET_VALUE not in orjson.dumps(receiver.received).decode()


def test_selected_and_renamed_fields_in_array_mode(hook_server, receiver):
    sink = make_webhook(
        hook_server,
        mode="array",
        fields=["id", "severity", "user.upn", "policies[].rules[].name", "links.incident"],
        rename={"user.upn": "user", "links.incident": "incident_url"},
    )
    out = sink.write_batch(entries(incident(), alert("da1")))
    assert out.delivered == [1, 2]
    ((headers, body),) = receiver.received
    assert "idempotency-key" not in headers
    assert body[0] == {
        "id": "incident:42",
        "severity": "high",
        "user": "alice@contoso.com",
        "policies[].rules[].name": ["Block external sharing"],
        "incident_url": "https://security.microsoft.com/incidents/42?tid=11111111-2222-3333-4444-555555555555",
    }
    assert body[1]["user"] == "bob@contoso.com"


def test_bad_signature_is_refused_with_401_and_stops_the_sink(hook_server, receiver):
    sink = make_webhook(hook_server, secret="not-the-receivers-key")
    out = sink.write_batch(entries(incident(), alert("da1")))
    assert out.fatal and "sinks.hook.secret" in out.fatal and "not-the-receivers-key" not in out.fatal
    assert sorted(out.retry) == [1, 2] and not out.delivered
    assert receiver.refused == ["signature does not match"] and receiver.received == []
    unsigned = make_webhook(hook_server, secret=None)
    assert unsigned.write_batch(entries(incident())).fatal
    assert receiver.refused[-1].startswith("missing")


def test_retry_after_on_429_and_5xx(hook_server, receiver):
    sink = make_webhook(hook_server)
    receiver.script = [Response.json({}, 429, {"Retry-After": "12"})]
    out = sink.write_batch(entries(incident(), alert("da1")))
    assert out.retry == [1, 2] and out.retry_after == 12.0
    receiver.script = [Response.empty(204), Response.json({}, 503)]
    out = sink.write_batch(entries(incident(), alert("da1")))
    assert out.delivered == [1] and out.retry == [2] and "503" in out.retry_reason


def test_refused_events_are_rejected_alone_even_in_array_mode(hook_server, receiver):
    receiver.refuse_if = b"alert:bad"
    sink = make_webhook(hook_server, mode="array")
    batch = entries(incident("1"), alert("ok1"), alert("bad"), alert("ok2"), incident("2"))
    out = sink.write_batch(batch)
    assert sorted(out.delivered) == [1, 2, 4, 5]
    assert list(out.rejected) == [3] and "422" in out.rejected[3]
    delivered = [item["id"] for _, body in receiver.received for item in body]
    assert sorted(delivered) == ["alert:ok1", "alert:ok2", "incident:1", "incident:2"]


def test_413_splits_an_array(hook_server, receiver):
    receiver.script = [Response.json({}, 413)]
    sink = make_webhook(hook_server, mode="array")
    out = sink.write_batch(entries(incident("1"), incident("2"), incident("3")))
    assert sorted(out.delivered) == [1, 2, 3] and len(receiver.received) == 2


def test_wrong_url_stops_the_sink(hook_server):
    problems: list[str] = []
    settings = build(
        WebhookSettings,
        {"url": f"{hook_server.url}/nope", "secret": KEY, "http": {"ca_bundle": hook_server.ca_file}},
        "sinks.hook",
        problems,
    )
    sink = WebhookSink("hook", settings, SinkContext("hook", logging.getLogger("t")))
    out = sink.write_batch(entries(incident()))
    assert out.fatal and "sinks.hook.url" in out.fatal


def test_configuration_problems_name_their_keys(hook_server):
    with pytest.raises(ConfigError) as info:
        make_webhook(
            hook_server,
            fields=["id", "nosuch.field", "sensitive_types[].detected_values[].value"],
            rename={"other": "x"},
            headers={"Authorization": "Bearer x"},
        )
    text = str(info.value)
    assert "sinks.hook.fields[1]: 'nosuch.field' is not an event field" in text
    assert "sinks.hook.fields[2]" in text and "include_detected_values" in text
    assert "sinks.hook.rename.other" in text
    assert "sinks.hook.headers.Authorization" in text


def test_hostile_ids_cannot_break_or_inject_headers(hook_server, receiver):
    sink = make_webhook(hook_server)
    event = incident()
    event.id = "incident:42\r\nX-Injected: 1 ünïcode"
    event.idempotency_key = event.id + "@t"
    out = sink.write_batch(entries(event))
    assert out.delivered == [1]
    headers, body = receiver.received[0]
    assert "x-injected" not in headers
    assert headers["x-dlpfwd-event-id"] == "incident:42%0D%0AX-Injected:%201%20%C3%BCn%C3%AFcode"
    assert body["id"] == event.id


def test_alert_adopting_an_incident_ticket_only_adds_a_note(server, app):
    from .conftest import KV, make_sink

    make_sink(server).write_batch(entries(incident()))
    before = app.table("incident")[0]
    make_sink(server, state=KV()).write_batch(entries(alert("da9")))  # state lost, an alert comes first
    (after,) = app.table("incident")
    assert after["short_description"] == before["short_description"]
    assert "alert da9 linked" in app.journal(after["sys_id"], "work_notes")[-1]


def test_413_then_a_refused_event_sends_nothing_twice(hook_server, receiver):
    receiver.script = [Response.json({}, 413)]
    receiver.refuse_if = b"alert:bad"
    sink = make_webhook(hook_server, mode="array")
    out = sink.write_batch(entries(incident("1"), incident("2"), alert("bad"), incident("3")))
    assert sorted(out.delivered) == [1, 2, 4] and list(out.rejected) == [3]
    delivered = [item["id"] for _, body in receiver.received for item in body]
    assert sorted(delivered) == ["incident:1", "incident:2", "incident:3"]  # each exactly once


def test_receiver_answers_401_and_stores_nothing_for_an_old_or_forged_request(hook_server, receiver):
    import ssl

    import httpx

    body = orjson.dumps({"id": "incident:1"})
    tls = ssl.create_default_context(cafile=hook_server.ca_file)
    old = sign(body, KEY, now=time.time() - 3600)  # correctly signed, an hour ago: a replay
    forged = {**sign(body, KEY), SIGNATURE_HEADER: "sha256=" + "ab" * 32}
    with httpx.Client(verify=tls) as c:
        for headers in (old, forged):
            r = c.post(f"{hook_server.url}/hook", content=body, headers=headers)
            assert r.status_code == 401
        fresh = c.post(f"{hook_server.url}/hook", content=body, headers=sign(body, KEY))
        assert fresh.status_code == 204
    assert receiver.refused[0].startswith("timestamp is 3") and "s old" in receiver.refused[0]
    assert receiver.refused[1] == "signature does not match"
    assert [b for _, b in receiver.received] == [{"id": "incident:1"}]
