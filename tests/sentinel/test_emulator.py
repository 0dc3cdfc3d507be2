"""The Logs Ingestion emulator answers as the service documents, to any HTTP client."""

from __future__ import annotations

import gzip
import ssl

import httpx
import orjson
import pytest

from emulators.httpd import EmulatorServer, Request
from emulators.logs_ingestion.app import Fault
from sinks.sentinel.columns import STREAM
from tests.sentinel.helpers import DCR, make_app


@pytest.fixture
def server(issuer, tmp_path):
    with EmulatorServer(make_app(issuer, limit=50_000), cert_dir=tmp_path) as srv:
        yield srv


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=server.ca_file)) as c:
        yield c


def post(client, issuer, body, *, token=None, dcr=DCR, stream=STREAM, version="2023-01-01", headers=None):
    h = {"Content-Type": "application/json", "Authorization": f"Bearer {token or issuer.token()}"}
    h.update(headers or {})
    params = {"api-version": version} if version else {}
    return client.post(f"/dataCollectionRules/{dcr}/streams/{stream}", params=params, content=body, headers=h)


def upload_request(issuer, body: bytes, gzip: bool = False) -> Request:
    """A Logs Ingestion call for ``app.handle`` (no server): token, JSON content type, optional gzip."""
    path = f"/dataCollectionRules/{DCR}/streams/{STREAM}"
    headers = {"authorization": f"Bearer {issuer.token()}", "content-type": "application/json"}
    if gzip:
        headers["content-encoding"] = "gzip"
    return Request("POST", path, {"api-version": "2023-01-01"}, {}, headers, body)


def code(response) -> str:
    return response.json()["error"]["code"]


def test_accepts_gzip_array_and_drops_undeclared_columns(server, client, issuer):
    body = gzip.compress(orjson.dumps([{"EventId": "a", "Bogus": 1}, {"EventId": "b"}]))
    r = post(client, issuer, body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 204 and r.content == b""
    assert server.app.all_rows(STREAM) == [{"EventId": "a"}, {"EventId": "b"}]


def test_bare_object_is_accepted_but_ingests_nothing(server, client, issuer):
    assert post(client, issuer, b'{"EventId": "a"}').status_code == 204
    assert server.app.all_rows(STREAM) == [] and server.app.stats.ignored_objects == 1


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"version": ""}, 400, "MissingApiVersion"),
        ({"version": "2020-01-01"}, 400, "UnsupportedApiVersion"),
        ({"stream": "Custom-Other_CL"}, 400, "InvalidStream"),
        ({"dcr": "dcr-ffffffffffffffffffffffffffffffff"}, 404, "NotFound"),
        ({"headers": {"Content-Type": "text/plain"}}, 400, "InvalidContentType"),
        ({"headers": {"Content-Encoding": "br"}}, 400, "UnsupportedContentEncoding"),
    ],
)
def test_request_errors(client, issuer, kwargs, status, error):
    r = post(client, issuer, b'[{"EventId": "a"}]', **kwargs)
    assert r.status_code == status and code(r) == error


def test_token_checks(client, issuer):
    r = client.post(f"/dataCollectionRules/{DCR}/streams/{STREAM}?api-version=2023-01-01", content=b"[]")
    assert r.status_code == 401 and code(r) == "AuthenticationFailed"
    r = post(client, issuer, b"[]", token=issuer.token(aud="https://graph.microsoft.com"))
    assert r.status_code == 401 and code(r) == "InvalidAuthenticationTokenAudience"
    r = post(client, issuer, b"[]", token=issuer.token(lifetime=-1))
    assert r.status_code == 401 and code(r) == "InvalidAuthenticationToken"
    r = post(client, issuer, b"[]", token="not.a.jwt")
    assert r.status_code == 401
    r = post(client, issuer, b"[]", token=issuer.token(appid="someone-else"))
    assert r.status_code == 403 and code(r) == "OperationFailed" and DCR in r.json()["error"]["message"]
    # gov/china audiences name the same resource for the emulator
    assert (
        post(client, issuer, b'[{"EventId":"x"}]', token=issuer.token(aud="https://monitor.azure.com/")).status_code
        == 204
    )


def test_size_limit_applies_before_and_after_gzip(client, issuer):
    big = orjson.dumps([{"Description": "x" * 60_000}])
    r = post(client, issuer, big)
    assert r.status_code == 413 and code(r) == "ContentLengthLimitExceeded"
    assert r.json()["error"]["message"].startswith("Maximum allowed content length: 50000 bytes")
    small_on_wire = gzip.compress(big)
    assert len(small_on_wire) < 50_000
    r = post(client, issuer, small_on_wire, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413  # a gzip body is measured once decompressed too


def test_malformed_bodies(client, issuer):
    assert post(client, issuer, b"").status_code == 500  # empty body: 500 without error code
    assert code(post(client, issuer, b"{nope")) == "InvalidPayload"
    assert code(post(client, issuer, b"[1, 2]")) == "InvalidPayload"
    assert code(post(client, issuer, b"\x1f\x8bjunk", headers={"Content-Encoding": "gzip"})) == "InvalidPayload"


def test_strict_mode_checks_types(issuer, tmp_path):
    app = make_app(issuer, strict=True)
    with EmulatorServer(app, cert_dir=tmp_path) as srv:
        with httpx.Client(base_url=srv.url, verify=ssl.create_default_context(cafile=srv.ca_file)) as c:
            r = post(c, issuer, orjson.dumps([{"RecordType": "eleven"}]))
            assert r.status_code == 400 and "RecordType" in r.json()["error"]["message"]
            assert post(c, issuer, orjson.dumps([{"RecordType": 11, "Policies": [{"a": 1}]}])).status_code == 204


def test_strict_mode_checks_integer_ranges(issuer):
    app = make_app(issuer, strict=True)
    ok = [{"RecordType": 2**31 - 1, "ObjectSize": -(2**63)}, {"ObjectSize": 2**63 - 1}]
    assert app.handle(upload_request(issuer, orjson.dumps(ok))).status == 204
    for column, kind, value in (
        ("RecordType", "int", 2**31),
        ("ObjectSize", "long", 2**63),
        ("ObjectSize", "long", 2**64 - 1),  # orjson: an int up to 2**64 - 1, a float beyond
    ):
        r = app.handle(upload_request(issuer, f'[{{"{column}": {value}}}]'.encode()))
        message = orjson.loads(r.body)["error"]["message"]
        assert (r.status, message) == (400, f"Element 0: column '{column}' holds a value out of the range of {kind}.")


@pytest.mark.parametrize("number", [b"1e400", b"-1E+400", b"1e309", b"9" * 400])
@pytest.mark.parametrize("how", [{"keep_rows": 100}, {"keep_rows": 0}, {"strict": True}])
@pytest.mark.parametrize("event_id", [b"a", b"\xc3\xa9"])  # an ASCII body is judged in one pass
def test_numbers_beyond_a_real_are_refused_on_every_path(issuer, how, number, event_id):
    """JSON has no infinity: a number beyond a 64-bit real (infinite once parsed) in an int, long or
    real column is refused, whether the emulator builds the rows (kept, strict) or only validates
    them (keep_rows=0)."""
    app = make_app(issuer, **how)
    body = b'[{"EventId": "' + event_id + b'"}, {"EventId": "b", "ObjectSize": ' + number + b"}]"
    r = app.handle(upload_request(issuer, body))
    error = orjson.loads(r.body)["error"]
    assert (r.status, error["code"]) == (400, "InvalidPayload")
    assert error["message"] == "Element 1: column 'ObjectSize' holds a number beyond the range of a 64-bit real."
    assert app.stats.rows == 0 and app.all_rows(STREAM) == []
    # elsewhere (a dynamic or undeclared column) such a number is not refused
    fine = b'[{"EventId": "' + event_id + b'", "ObjectSize": 17, "Policies": [{"count": 1e400}], "Note": 1e400}]'
    assert app.handle(upload_request(issuer, fine)).status == 204
    kept = [row["EventId"] for row in app.all_rows(STREAM)]
    assert app.stats.rows == 1 and kept == [event_id.decode()][: app.keep_rows]


def test_throttling_answers_429_with_retry_after(issuer, tmp_path):
    app = make_app(issuer, requests_per_minute=2)
    with EmulatorServer(app, cert_dir=tmp_path) as srv:
        with httpx.Client(base_url=srv.url, verify=ssl.create_default_context(cafile=srv.ca_file)) as c:
            statuses = [post(c, issuer, b'[{"EventId":"a"}]').status_code for _ in range(3)]
            assert statuses == [204, 204, 429]
            r = post(c, issuer, b'[{"EventId":"a"}]')
            assert code(r) == "TooManyRequests" and 1 <= int(r.headers["Retry-After"]) <= 61


def test_injected_faults_in_order(server, client, issuer):
    server.app.inject(Fault(503, retry_after=2), Fault(429))
    r1 = post(client, issuer, b'[{"EventId":"a"}]')
    r2 = post(client, issuer, b'[{"EventId":"a"}]')
    r3 = post(client, issuer, b'[{"EventId":"a"}]')
    assert (r1.status_code, r1.headers["Retry-After"], r2.status_code, r3.status_code) == (503, "2", 429, 204)


BODIES = [
    b"[]",
    b'[{"EventId": "a"}, {"EventId": "b", "Bogus": [1, {"x": null}]}]',
    b'  [ {"EventId": "\xc3\xa9"} ]\n',
    b'{"EventId": "a"}',
    b'"text"',
    b"{nope",
    b"[1, 2]",
    b'[{"EventId": "a"}, "b"]',
    b'[{"EventId": "a", "Policies": [{"id": }]}]',
    b'[{"EventId": "a"}] trailing',
    b'[{"EventId": "\xff"}]',
    b'[{"EventId": "a", "ObjectSize": 1e400}]',
    b'[{"EventId": "a"}, {"EventId": "b", "ObjectSize": -1E+400}]',
    b'[{"EventId": "a", "SensitiveMatchCount": [' + b"9" * 400 + b"]}]",
    b'[{"EventId": "a", "Policies": [{"count": 1e400}], "Bogus": -1e999}]',  # not numeric columns
    b'[{"EventId": "1e400", "ObjectSize": 1e-400, "RecordType": "eleven", "SeverityRank": 1.5e308}]',
]


@pytest.mark.parametrize("body", BODIES)
def test_validate_only_answers_like_the_storing_path(issuer, body):
    """With no rows to keep (keep_rows reached, no sink, not strict) the emulator only validates
    the array; it must answer every body exactly as the path that builds the rows does."""
    answers = []
    for keep in (100, 0):
        app = make_app(issuer, keep_rows=keep)
        r = app.handle(upload_request(issuer, gzip.compress(body), gzip=True))
        answers.append((r.status, r.body, app.stats.accepted_requests, app.stats.rows))
        assert r.status in (204, 400)  # the body was judged, not the request
    assert answers[0] == answers[1]
    assert app.all_rows(STREAM) == []  # keep_rows=0: nothing built or kept
