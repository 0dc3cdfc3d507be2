"""The HEC emulator answers as Splunk documents: auth codes, data codes, channels, acks, limits."""

from __future__ import annotations

import base64
import gzip
import subprocess
import sys
import time
import zlib

import httpx
import orjson
import pytest

from emulators.hec.app import DEFAULT_TOKEN, HecApp, TokenConfig
from emulators.httpd import EmulatorServer

ACK_TOKEN = "11111111-1111-4111-8111-111111111111"
OFF_TOKEN = "22222222-2222-4222-8222-222222222222"
CHANNEL = "33333333-3333-4333-8333-333333333333"
EVENT = b'{"event":{"a":1},"sourcetype":"t"}'


@pytest.fixture(scope="module")
def hec(tmp_path_factory):
    app = HecApp(
        {
            DEFAULT_TOKEN: TokenConfig(indexes=["main", "dlp"]),
            ACK_TOKEN: TokenConfig(name="acked", use_ack=True),
            OFF_TOKEN: TokenConfig(disabled=True),
        },
        max_content_length=50_000,
        ack_delay=0.2,
    )
    with EmulatorServer(app, tls=False) as server:
        with httpx.Client(base_url=server.url) as client:
            yield app, client


def post(client, body: bytes, token: str | None = DEFAULT_TOKEN, path="/services/collector/event", **headers):
    if token is not None:
        headers.setdefault("Authorization", f"Splunk {token}")
    return client.post(path, content=body, headers=headers)


def answer(response) -> tuple[int, int | None]:
    return response.status_code, response.json().get("code")


@pytest.mark.parametrize(
    ("headers", "token", "expected"),
    [
        ({}, None, (401, 2)),
        ({"Authorization": "Bearer abc"}, None, (401, 3)),
        ({}, "99999999-0000-4000-8000-000000000000", (403, 4)),
        ({}, OFF_TOKEN, (403, 1)),
    ],
)
def test_auth_codes(hec, headers, token, expected):
    app, client = hec
    assert answer(post(client, EVENT, token, **headers)) == expected


def test_basic_auth_and_query_string(hec):
    app, client = hec
    basic = base64.b64encode(f"x:{DEFAULT_TOKEN}".encode()).decode()
    assert answer(post(client, EVENT, None, Authorization=f"Basic {basic}")) == (200, 0)
    r = client.post(f"/services/collector/event?token={DEFAULT_TOKEN}", content=EVENT)
    assert answer(r) == (400, 16)


def test_data_codes_and_partial_indexing(hec):
    app, client = hec
    app.reset()
    assert answer(post(client, b"")) == (400, 5)
    r = post(client, b"[" + EVENT + b"]")
    assert answer(r) == (400, 6) and r.json()["invalid-event-number"] == 0
    r = post(client, EVENT + EVENT)  # concatenated, no separator: both indexed
    assert answer(r) == (200, 0)
    r = post(client, EVENT + b"\n{oops\n" + EVENT)
    assert answer(r) == (400, 6) and r.json()["invalid-event-number"] == 1
    assert answer(post(client, b'{"sourcetype":"t"}')) == (400, 12)
    assert answer(post(client, b'{"event":""}')) == (400, 13)
    assert answer(post(client, b'{"event":"x","index":"secret"}')) == (400, 7)
    assert answer(post(client, b'{"event":"x","fields":{"a":{"b":1}}}')) == (400, 15)
    assert answer(post(client, b'{"event":"x","fields":{"a":["b",1]}}')) == (200, 0)
    assert len(app.indexed) == 2 + 1 + 1  # only what came before each bad object
    assert {i["index"] for i in app.indexed} == {"main"}


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b'{"event":null}', 13),
        (b'{"event": { } }', 13),
        (b'{"event":"   "}', 13),
        (b'{"event":"' + b" " * 200 + b'"}', 13),
        (b'{"event":"\\t\\n"}', 13),  # escaped whitespace is still blank
        (b'{"event":"\\u00a0"}', 13),  # so is Unicode whitespace
        (b'{"time":1}', 12),
        (b'"just a string"', 6),
        (b"[1,2]", 6),
        (b'{"event":{"a":[1,2}}', 6),  # malformed deep inside the event
        (b'{"event":"x","index":5}', 7),
        (b'{"event":"x","fields":[1]}', 15),
    ],
)
def test_each_envelope_is_checked_in_full(hec, line, code):
    """The fast path (the event object is validated, not built) refuses what the full decoder did,
    with the number of the bad envelope after two good ones."""
    app, client = hec
    app.reset()
    r = post(client, EVENT + b"\n" + EVENT + b"\n" + line + b"\n" + EVENT)
    assert answer(r) == (400, code)
    assert r.json()["invalid-event-number"] == 2
    assert [i["event"] for i in app.indexed] == [{"a": 1}, {"a": 1}]


def test_envelopes_on_one_line_and_non_blank_events(hec):
    app, client = hec
    app.reset()
    body = EVENT + b" " + EVENT + b'\n{"event":0}\n{"event":false}\n{"event":[]}\n{"event":" x "}'
    assert answer(post(client, body)) == (200, 0)
    assert [i["event"] for i in app.indexed] == [{"a": 1}, {"a": 1}, 0, False, [], " x "]


def test_compression_and_size_limit(hec):
    app, client = hec
    assert answer(post(client, gzip.compress(EVENT), **{"Content-Encoding": "gzip"})) == (200, 0)
    assert post(client, zlib.compress(EVENT), **{"Content-Encoding": "deflate"}).status_code == 415
    corrupt = bytearray(gzip.compress(EVENT * 20))
    corrupt[12:20] = b"\x00" * 8
    assert answer(post(client, bytes(corrupt), **{"Content-Encoding": "gzip"})) == (400, 6)
    assert answer(post(client, b"not gzip", **{"Content-Encoding": "gzip"})) == (400, 6)
    big = b"\n".join([b'{"event":"' + b"x" * 1000 + b'"}'] * 60)
    assert post(client, big).status_code == 413
    assert post(client, gzip.compress(big), **{"Content-Encoding": "gzip"}).status_code == 413  # decompressed size


def test_channels_and_acks(hec):
    app, client = hec
    assert answer(post(client, EVENT, ACK_TOKEN)) == (400, 10)
    assert answer(post(client, EVENT, ACK_TOKEN, **{"X-Splunk-Request-Channel": "not-a-guid"})) == (400, 11)
    ids = [post(client, EVENT, ACK_TOKEN, **{"X-Splunk-Request-Channel": CHANNEL}).json()["ackId"] for _ in range(3)]
    assert ids == [0, 1, 2]
    other = client.post(
        f"/services/collector/event?channel={CHANNEL.replace('3', '4')}",
        content=EVENT,
        headers={"Authorization": f"Splunk {ACK_TOKEN}"},
    )
    assert other.json()["ackId"] == 0  # per channel

    def poll(ack_ids):
        r = post(
            client,
            orjson.dumps({"acks": ack_ids}),
            ACK_TOKEN,
            "/services/collector/ack",
            **{"X-Splunk-Request-Channel": CHANNEL},
        )
        assert r.status_code == 200
        return r.json()["acks"]

    assert poll([0, 1, 2, 7]) == {"0": False, "1": False, "2": False, "7": False}
    deadline = time.monotonic() + 5
    while not poll([0])["0"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert poll([1, 2]) == {"1": True, "2": True}
    assert poll([1]) == {"1": False}  # reported once, then forgotten
    assert answer(post(client, b'{"acks":[0]}', DEFAULT_TOKEN, "/services/collector/ack")) == (400, 14)


def test_faults_health_and_control_api(hec):
    app, client = hec
    assert answer(client.get("/services/collector/health")) == (200, 17)
    assert client.post("/_emulator/faults", json={"busy_next": 1}).status_code == 200
    assert answer(client.get("/services/collector/health")) == (503, 18)
    assert answer(post(client, EVENT)) == (503, 9)
    assert answer(post(client, EVENT)) == (200, 0)
    stats = client.get("/_emulator/stats").json()
    assert stats["indexed"] == len(app.indexed) and stats["requests"] >= 2
    headers = {"X-Splunk-Request-Channel": CHANNEL}
    assert answer(post(client, EVENT, ACK_TOKEN, **headers)) == (200, 0)
    assert client.post("/_emulator/forget-channels").status_code == 200
    assert answer(post(client, b'{"acks":[0]}', ACK_TOKEN, "/services/collector/ack", **headers)) == (400, 11)
    client.post("/_emulator/reset")
    assert client.get("/_emulator/indexed").json() == []


def test_command_line_emulator_starts_and_serves(tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulators.hec",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--ack",
            "--state-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("HEC emulator listening on https://127.0.0.1:")
        url = line.split()[4]
        ca = line.split("ca=")[1].strip()
        with httpx.Client(verify=__import__("ssl").create_default_context(cafile=ca)) as client:
            assert client.get(f"{url}/services/collector/health").json()["code"] == 17
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_record_limit_keeps_the_latest_and_counts_all():
    from emulators.httpd import Request

    app = HecApp(record_limit=2)
    for i in range(3):
        body = b'{"event":{"n":%d}}' % i
        request = Request(
            "POST", "/services/collector/event", {}, {}, {"authorization": f"Splunk {DEFAULT_TOKEN}"}, body
        )
        assert app.handle(request).status == 200
    assert [e["n"] for e in app.events()] == [1, 2]
    assert app.indexed_count == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["--host", "127.0.0.2", "--port", "0", "--http", "--state-dir", "d"],
        ["--host", "127.0.0.2", "--port", "0", "--plain-http", "--cert-dir", "d"],  # older spellings
    ],
)
def test_command_flags_match_the_tenant_emulator(argv):
    """--host/--port/--http/--state-dir as the tenant emulator spells them; old names still parse."""
    import argparse

    from emulators.hec.plugin import configure
    from emulators.tenant.plugin import configure_emulator

    ours, tenant = argparse.ArgumentParser(), argparse.ArgumentParser()
    configure(ours)
    configure_emulator(tenant)
    args = ours.parse_args(argv)
    assert (args.bind, args.port, args.http, args.state_dir) == ("127.0.0.2", 0, True, "d")
    shared = tenant.parse_args(["--host", "127.0.0.2", "--port", "0", "--http", "--state-dir", "d"])
    assert (shared.bind, shared.port, shared.http, shared.state_dir) == (args.bind, args.port, args.http, "d")
