"""Fixtures for the ``dlpfwd serve`` tests: certificates, a state store, a running endpoint over
TLS and an httpx client that trusts it."""

from __future__ import annotations

import datetime as dt
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from emulators.httpd import ensure_certificates
from forwarder.serve import ServeServer, build_server
from forwarder.serve.inbox import SEEN_NAMESPACE
from forwarder.serve.settings import ServeSettings
from forwarder.settings import Secret
from forwarder.signing import sign
from forwarder.state import SqliteStateStore, open_store
from forwarder.sync import inbox

HMAC_KEY = "hmac-key-0123456789-abcdefghij"
OLD_HMAC_KEY = "old-hmac-key-9876543210-zyxwvu"
BEARER = "bearer-token-ABCDEFGHIJ-0123456789"
URL_PATH = "/v1/status-changes"


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    ca, cert, key = ensure_certificates(tmp_path_factory.mktemp("serve-certs"))
    return Certs(ca, cert, key)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    s = open_store(str(tmp_path / "state"))
    yield s
    s.close()


def settings_for(certs: Certs, **overrides: Any) -> ServeSettings:
    values: dict[str, Any] = {
        "bind": "127.0.0.1",
        "port": 0,
        "tls_cert": str(certs.cert),
        "tls_key": str(certs.key),
        "hmac_secret": Secret(HMAC_KEY, "${DLPFWD_SERVE_HMAC}"),
        "hmac_previous_secret": Secret(OLD_HMAC_KEY, "${DLPFWD_SERVE_HMAC_OLD}"),
        "bearer_token": Secret(BEARER, "${DLPFWD_SERVE_TOKEN}"),
        "max_body": 16384,
        "request_timeout": 5.0,
    }
    values.update(overrides)
    return ServeSettings(**values)


@pytest.fixture
def server(certs: Certs, store: SqliteStateStore) -> Iterator[ServeServer]:
    srv = build_server(settings_for(certs), store).start()
    yield srv
    srv.stop()


def trust(certs: Certs) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.ca))


@pytest.fixture
def client(server: ServeServer, certs: Certs) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, verify=trust(certs), timeout=10.0) as c:
        yield c


def now_iso(offset: float = 0.0) -> str:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def change(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "changeId": f"test-{uuid.uuid4()}",
        "incidentId": "2031",
        "timestamp": now_iso(),
        "status": "resolved",
        "classification": "truePositive",
        "determination": "maliciousUserActivity",
        "comment": "Closed from a test",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


def encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else orjson.dumps(body)


def signed_headers(raw: bytes, key: str = HMAC_KEY, now: float | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", **sign(raw, key, now)}


def post_signed(client: httpx.Client, body: Any, key: str = HMAC_KEY, now: float | None = None) -> httpx.Response:
    raw = encode(body)
    return client.post(URL_PATH, content=raw, headers=signed_headers(raw, key, now))


def post_bearer(client: httpx.Client, body: Any, token: str = BEARER) -> httpx.Response:
    raw = encode(body)
    return client.post(
        URL_PATH, content=raw, headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    )


def snapshot(store: SqliteStateStore) -> tuple[Any, ...]:
    """Everything an accepted request changes: inbox rows and totals, remembered change ids."""
    rows = store._reader().execute("SELECT key, value FROM kv WHERE ns = ? ORDER BY key", (SEEN_NAMESPACE,))
    return (inbox.stats(store), list(rows))


def pending(store: SqliteStateStore) -> list[Any]:
    """The inbox's pending changes (the oldest of each incident)."""
    return inbox.due(store, now=9e18)
