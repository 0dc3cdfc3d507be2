"""``POST /v1/status-changes`` over real HTTPS: accepted changes land in the durable sync inbox;
everything forged, stale, oversized or malformed is refused with its code and changes nothing."""

from __future__ import annotations

import json
import socket
import ssl
import time
from typing import Any

import httpx
import pytest

from forwarder.state import open_store
from forwarder.sync import inbox

from .conftest import (
    BEARER,
    OLD_HMAC_KEY,
    URL_PATH,
    change,
    encode,
    now_iso,
    pending,
    post_bearer,
    post_signed,
    signed_headers,
    snapshot,
)


def test_signed_change_is_accepted_and_stored_durably(client, store, server, tmp_path):
    body = change(assignedTo="secops@contoso.com", source="splunk:DLP high")
    response = post_signed(client, body)
    assert response.status_code == 202, response.text
    assert response.json() == {"changeId": body["changeId"], "incidentId": "2031", "duplicate": False}
    # durable: a second connection to the same state directory (another process would) sees it
    other = open_store(str(tmp_path / "state"))
    try:
        (item,) = inbox.due(other, now=9e18)
    finally:
        other.close()
    c = item.change
    assert (c.origin, c.reference, c.incident_id) == ("inbound", body["changeId"], "2031")
    assert (c.status, c.classification, c.determination) == ("resolved", "truePositive", "maliciousUserActivity")
    assert c.assigned_to == "secops@contoso.com" and c.comment == "Closed from a test"
    assert c.version == body["timestamp"] == c.observed and c.author == "splunk:DLP high"


def test_previous_hmac_key_is_accepted_during_rotation(client, store):
    assert post_signed(client, change(), key=OLD_HMAC_KEY).status_code == 202
    assert len(pending(store)) == 1


def test_bearer_token_is_accepted(client, store):
    body = change(status="inProgress", classification=..., determination=..., comment=...)
    response = post_bearer(client, body)
    assert response.status_code == 202, response.text
    (item,) = pending(store)
    assert item.change.status == "inProgress" and item.change.classification is None and item.change.comment == ""


def test_replayed_request_is_accepted_idempotently_and_changes_nothing_new(client, store):
    raw = encode(change())
    headers = signed_headers(raw)
    first = client.post(URL_PATH, content=raw, headers=headers)
    assert first.status_code == 202 and first.json()["duplicate"] is False
    before = snapshot(store)
    for _ in range(3):  # the same signed request again (a replay within the window, or a client retry)
        again = client.post(URL_PATH, content=raw, headers=headers)
        assert again.status_code == 202 and again.json()["duplicate"] is True
    assert snapshot(store) == before
    assert len(pending(store)) == 1
    # the same change id re-signed later (a client retry) is a repeat too
    assert post_signed(client, raw, now=time.time() + 5).json()["duplicate"] is True
    assert post_bearer(client, raw).json()["duplicate"] is True
    assert snapshot(store) == before


def test_change_id_reused_for_a_different_change_is_refused(client, store):
    body = change()
    assert post_signed(client, body).status_code == 202
    before = snapshot(store)
    response = post_signed(client, {**body, "status": "active"})
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "ChangeIdReused",
        "message": "changeId was already used for a different change",
        "field": "changeId",
    }
    assert snapshot(store) == before


def _refused(client: httpx.Client, store: Any, response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    err: dict[str, Any] = response.json()["error"]
    assert err["code"] == code
    return err


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda raw: signed_headers(raw, key="wrong-key-0123456789abcdef"), "signature does not match"),
        (lambda raw: signed_headers(raw, now=time.time() - 301), "s old"),
        (lambda raw: signed_headers(raw, now=time.time() + 400), "in the future"),
        (lambda raw: {**signed_headers(raw), "X-Dlpfwd-Signature": "sha256=" + "0" * 64}, "does not match"),
        (lambda raw: {k: v for k, v in signed_headers(raw).items() if k != "X-Dlpfwd-Timestamp"}, "missing"),
        (lambda raw: {"Content-Type": "application/json"}, "missing credentials"),
        (lambda raw: {"Content-Type": "application/json", "Authorization": "Bearer nope-nope-nope"}, "does not match"),
        (lambda raw: {"Content-Type": "application/json", "Authorization": f"Basic {BEARER}"}, "Bearer"),
    ],
    ids=[
        "bad-key",
        "old-timestamp",
        "future-timestamp",
        "forged-digest",
        "no-timestamp",
        "no-auth",
        "bad-bearer",
        "basic-scheme",
    ],  # fmt: skip
)
def test_unauthenticated_requests_get_401_and_change_nothing(client, store, make, reason):
    before = snapshot(store)
    raw = encode(change())
    response = client.post(URL_PATH, content=raw, headers=make(raw))
    err = _refused(client, store, response, 401, "Unauthorized")
    assert reason in err["message"]
    assert response.headers["www-authenticate"] == "HMAC-SHA256, Bearer"
    assert snapshot(store) == before


def test_signature_over_another_body_is_refused(client, store):
    before = snapshot(store)
    signed_for = encode(change(status="active"))
    tampered = signed_for.replace(b'"active"', b'"resolved"')
    response = client.post(URL_PATH, content=tampered, headers=signed_headers(signed_for))
    _refused(client, store, response, 401, "Unauthorized")
    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("body", "code", "field", "words"),
    [
        (b"{not json", "InvalidJson", None, "not JSON"),
        (b"[1, 2]", "InvalidJson", None, "JSON object"),
        (b"\xff\xfe{}", "InvalidJson", None, "UTF-8"),
        (b"  ", "InvalidJson", None, "empty"),
        (change(priority="high"), "UnknownField", "priority", "unknown field 'priority'"),
        (change(status="closed"), "InvalidField", "status", "expected one of active, inProgress, resolved, redirected"),
        (change(status="Resolved"), "InvalidField", "status", "did you mean 'resolved'"),
        (change(classification="benignPositive"), "InvalidField", "classification", "falsePositive"),
        (change(determination="Clean"), "InvalidField", "determination", "did you mean 'clean'"),
        (change(incidentId=2031), "InvalidField", "incidentId", "expected a string, got a number"),
        (change(incidentId="20 31"), "InvalidField", "incidentId", "digits"),
        (change(changeId=...), "MissingField", "changeId", "required"),
        (change(timestamp=...), "MissingField", "timestamp", "required"),
        (change(timestamp="2026-11-23 10:00"), "InvalidField", "timestamp", "zone"),
        (change(timestamp="yesterday"), "InvalidField", "timestamp", "ISO 8601"),
        (change(timestamp=now_iso(3600)), "InvalidField", "timestamp", "in the future"),
        (change(assignedTo=None), "InvalidField", "assignedTo", "got null"),
        (change(comment="x" * 10001), "InvalidField", "comment", "longer than 10000"),
        (change(comment="a\x00b"), "InvalidField", "comment", "control characters"),
        (change(changeId="has space"), "InvalidField", "changeId", "visible ASCII"),
        (
            change(status=..., classification=..., determination=..., comment=...),
            "NoChange",
            None,
            "at least one of status",
        ),
        (b'{"changeId": "a", "changeId": "b"}', "DuplicateField", "changeId", "more than once"),
        (b'{"changeId": NaN}', "InvalidJson", None, "not JSON"),
    ],
)
def test_malformed_bodies_get_400_naming_the_field_and_change_nothing(client, store, body, code, field, words):
    before = snapshot(store)
    for post in (post_signed, post_bearer):
        err = _refused(client, store, post(client, body), 400, code)
        assert words in err["message"], err
        assert err.get("field") == field
    assert snapshot(store) == before


def test_unknown_fields_are_named_one_at_a_time_without_echoing_values(client, store):
    err = post_signed(client, change(secretNote="4111-1111-1111-1111")).json()["error"]
    assert err["field"] == "secretNote" and "4111" not in json.dumps(err)


def test_wrong_content_type_gets_415(client, store):
    before = snapshot(store)
    raw = encode(change())
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", ""):
        headers = {**signed_headers(raw), "Content-Type": content_type}
        _refused(client, store, client.post(URL_PATH, content=raw, headers=headers), 415, "UnsupportedMediaType")
    gz = {**signed_headers(raw), "Content-Encoding": "gzip"}
    _refused(client, store, client.post(URL_PATH, content=raw, headers=gz), 415, "UnsupportedMediaType")
    ok = {**signed_headers(raw), "Content-Type": "application/json; charset=utf-8"}
    assert client.post(URL_PATH, content=raw, headers=ok).status_code == 202
    assert len(pending(store)) == 1 and snapshot(store) != before


def _raw_exchange(server: Any, certs: Any, request: bytes, read_all: bool = True) -> bytes:
    """Send bytes over a fresh TLS connection; return what the server answered."""
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    with socket.create_connection((server.host, server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(request)
            chunks = []
            while True:
                data = tls.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if not read_all and b"\r\n\r\n" in b"".join(chunks):
                    break
    return b"".join(chunks)


def test_oversized_body_gets_413_before_it_is_read(server, certs, store):
    before = snapshot(store)
    # announce 10 MB, send only the headers: the answer comes at once and the connection closes
    head = (
        f"POST {URL_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n"
        f"Authorization: Bearer {BEARER}\r\n\r\n"
    ).encode()
    answer = _raw_exchange(server, certs, head)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"PayloadTooLarge" in answer and b"Connection: close" in answer
    assert snapshot(store) == before


def test_oversized_body_through_httpx(client, store):
    before = snapshot(store)
    body = change(comment="y" * 20000)  # over max_body = 16384 bytes
    _refused(client, store, post_signed(client, body), 413, "PayloadTooLarge")
    assert snapshot(store) == before


def test_missing_content_length_or_chunked_body_gets_411(server, certs, store, client):
    before = snapshot(store)

    def chunks():
        yield encode(change())

    response = client.post(
        URL_PATH, content=chunks(), headers={"Content-Type": "application/json", "Authorization": f"Bearer {BEARER}"}
    )
    _refused(client, store, response, 411, "LengthRequired")
    head = (
        f"POST {URL_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {BEARER}\r\n\r\n"
    ).encode()
    answer = _raw_exchange(server, certs, head)
    assert answer.startswith(b"HTTP/1.1 411 ") and b"Content-Length is required" in answer
    assert snapshot(store) == before


def test_routes_methods_and_health(client, store):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/nope").status_code == 404
    response = client.get(URL_PATH)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert client.post("/healthz", content=b"{}", headers={"Content-Type": "application/json"}).status_code == 405
    assert client.get("/healthz").headers["cache-control"] == "no-store"


def test_endpoint_keeps_serving_after_bad_requests(server, certs, client, store):
    # garbage request line, a half-sent body, a silent connection, a client that drops the TLS handshake
    assert _raw_exchange(server, certs, b"BLAH\r\n\r\n").startswith(b"HTTP/1.1 400")
    half = (
        f"POST {URL_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
        f'Authorization: Bearer {BEARER}\r\n\r\n{{"chan'
    ).encode()
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    with (
        socket.create_connection((server.host, server.port)) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(half)  # and hang up
    silent = socket.create_connection((server.host, server.port))
    plain = socket.create_connection((server.host, server.port))
    plain.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")  # plain HTTP to the TLS port
    try:
        for _ in range(5):
            assert post_signed(client, b"{").status_code == 400
        assert post_signed(client, change()).status_code == 202
        assert client.get("/healthz").status_code == 200
    finally:
        silent.close()
        plain.close()
    assert len(pending(store)) == 1


def test_keep_alive_connection_serves_several_requests(client, store):
    for i in range(3):
        assert post_signed(client, change(incidentId=str(3000 + i))).status_code == 202
    assert {item.change.incident_id for item in pending(store)} == {"3000", "3001", "3002"}


def test_older_determination_spellings_are_stored_in_the_schema_spelling(client, store):
    body = change(determination="insufficientData", classification="falsePositive")
    assert post_signed(client, body).status_code == 202
    (item,) = pending(store)
    assert item.change.determination == "notEnoughDataToValidate"
