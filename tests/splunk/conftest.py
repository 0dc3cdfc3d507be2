"""Fixtures for the Splunk tests: a TLS HEC emulator, event entries, a sink factory."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from emulators.hec.app import DEFAULT_TOKEN, HecApp, TokenConfig
from emulators.httpd import EmulatorServer
from forwarder.schema import (
    DlpEvent,
    Identity,
    ObjectRef,
    PolicyMatch,
    RuleMatch,
    SensitiveType,
    to_json,
)
from forwarder.settings import HttpSettings, Secret
from forwarder.sink import Entry, SinkContext
from sinks.splunk_hec.sink import HecSink, SplunkHecSettings


def make_event(i: int, **overrides: Any) -> DlpEvent:
    base: dict[str, Any] = dict(
        id=f"rec-{i}",
        idempotency_key=f"rec-{i}@2026-11-23T10:00:00Z",
        kind="audit",
        operation="DlpRuleMatch",
        event_time="2026-11-23T10:00:00.250000Z",
        updated_time="2026-11-23T10:00:00.250000Z",
        tenant_id="contoso-tenant",
        source="contoso-audit",
        source_type="management_activity",
        workload="Exchange",
        severity="high",
        title="",
        policies=[
            PolicyMatch(
                id="p1",
                name="Credit cards",
                rules=[RuleMatch(id="r1", name="Block external", actions=["BlockAccess"])],
            )
        ],
        user=Identity(upn="alice@contoso.com"),
        sender="alice@contoso.com",
        recipients=["bob@fabrikam.com"],
        object=ObjectRef(type="email", subject="Q3 numbers", message_id="<m1@contoso>"),
        sensitive_types=[SensitiveType(id="sit-cc", name="Credit Card Number", count=3)],
    )
    base.update(overrides)
    return DlpEvent(**base)


def entries(n: int, start: int = 0, **overrides: Any) -> list[Entry]:
    return [Entry(start + i + 1, to_json(make_event(start + i, **overrides))) for i in range(n)]


class Counters:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def __call__(self, name: str, n: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + n


@pytest.fixture
def hec(tmp_path) -> Iterator[tuple[HecApp, EmulatorServer]]:
    app = HecApp({DEFAULT_TOKEN: TokenConfig(indexes=["dlp", "main"], default_index="main")})
    server = EmulatorServer(app, tls=True, cert_dir=tmp_path / "certs")
    with server:
        yield app, server


@pytest.fixture
def hec_ack(tmp_path) -> Iterator[tuple[HecApp, EmulatorServer]]:
    app = HecApp({DEFAULT_TOKEN: TokenConfig(indexes=["dlp", "main"], default_index="main", use_ack=True)})
    server = EmulatorServer(app, tls=True, cert_dir=tmp_path / "certs")
    with server:
        yield app, server


SinkFactory = Callable[..., HecSink]


@pytest.fixture
def make_sink() -> Iterator[SinkFactory]:
    made: list[HecSink] = []

    def factory(server: EmulatorServer, **settings: Any) -> HecSink:
        urls = settings.pop("urls", None)
        values: dict[str, Any] = dict(
            url=server.url,
            token=Secret(settings.pop("token", DEFAULT_TOKEN)),
            http=HttpSettings(ca_bundle=server.ca_file, timeout=5.0),
            ack_poll_interval=0.0,
        )
        if urls is not None:
            values["url"], values["urls"] = urls[0], urls[1:]
        values.update(settings)
        counters = Counters()
        sink = HecSink(
            "splunk", SplunkHecSettings(**values), SinkContext("splunk", logging.getLogger("test.hec"), count=counters)
        )
        sink.counters = counters  # type: ignore[attr-defined]
        made.append(sink)
        return sink

    yield factory
    for sink in made:
        sink.close()
