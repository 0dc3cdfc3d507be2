"""Fixtures for the ITSM tests: a TLS ServiceNow emulator, sink factories and DLP events."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from emulators.httpd import App, EmulatorServer, Request, Response
from emulators.servicenow.app import ServiceNowApp
from forwarder.schema import (
    DetectedValue,
    DlpEvent,
    Identity,
    Links,
    ObjectRef,
    PolicyMatch,
    Related,
    RuleMatch,
    SensitiveType,
    to_json,
)
from forwarder.settings import build
from forwarder.sink import Entry, SinkContext
from sinks.servicenow.settings import ServiceNowSettings
from sinks.servicenow.sink import ServiceNowSink

SECRET_VALUE = "4111-1111-1111-1111"
TENANT = "11111111-2222-3333-4444-555555555555"


class KV:
    """In-memory stand-in for the runtime's durable key-value namespace."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.puts = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def put(self, key: str, value: Any) -> None:
        self.puts += 1
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("sn-certs"))


@pytest.fixture
def app() -> ServiceNowApp:
    return ServiceNowApp(users={"dlpfwd": "pa55word"}, clients={"dlpfwd-client": ("cl1ent-secret", "dlpfwd.oauth")})


class Switch(App):
    """Routes every request to the app the current test mounted (one server for the session:
    stopping a server costs half a second)."""

    def __init__(self) -> None:
        super().__init__()
        self.target: App = App()

    def handle(self, request: Request) -> Response:
        return self.target.handle(request)


@pytest.fixture(scope="session")
def shared_server(cert_dir: str) -> Iterator[tuple[EmulatorServer, Switch]]:
    switch = Switch()
    with EmulatorServer(switch, cert_dir=cert_dir) as srv:
        yield srv, switch


@pytest.fixture
def mount(shared_server: tuple[EmulatorServer, Switch]) -> Iterator[Callable[[App], EmulatorServer]]:
    srv, switch = shared_server

    def mount(app: App) -> EmulatorServer:
        switch.target = app
        app.base_url = srv.url
        return srv

    yield mount
    switch.target = App()


@pytest.fixture
def server(app: ServiceNowApp, mount: Callable[[App], EmulatorServer]) -> EmulatorServer:
    return mount(app)


def sn_settings(server: EmulatorServer, **overrides: Any) -> ServiceNowSettings:
    data: dict[str, Any] = {
        "instance_url": server.url,
        "username": "dlpfwd",
        "password": "pa55word",
        "http": {"ca_bundle": server.ca_file},
    }
    data.update(overrides)
    data = {k: v for k, v in data.items() if v is not None}  # None: leave the setting out
    problems: list[str] = []
    settings = build(ServiceNowSettings, data, "sinks.sn", problems)
    assert not problems, problems
    return settings


def make_sink(server: EmulatorServer, state: Any = None, **overrides: Any) -> ServiceNowSink:
    state = state if state is not None else KV()
    ctx = SinkContext("sn", logging.getLogger("test.sn"), state=state)
    return ServiceNowSink("sn", sn_settings(server, **overrides), ctx)


def entries(*events: DlpEvent, start: int = 1) -> list[Entry]:
    return [Entry(start + i, to_json(e)) for i, e in enumerate(events)]


def incident(number: str = "42", updated: str = "2026-11-23T10:05:00Z", severity: str = "high", **kw: Any) -> DlpEvent:
    event = DlpEvent(
        id=f"incident:{number}",
        idempotency_key=f"incident:{number}@{updated}",
        kind="incident",
        operation="Incident",
        event_time="2026-11-23T10:00:00Z",
        updated_time=updated,
        tenant_id=TENANT,
        source="contoso-graph",
        source_type="graph_security",
        workload="SharePoint",
        severity=severity,
        status="active",
        title="DLP policy match for document 'budget.xlsx' in SharePoint",
        policies=[
            PolicyMatch(
                id="p1",
                name="Finance DLP",
                rules=[RuleMatch(id="r1", name="Block external sharing", actions=["BlockAccess"])],
            )
        ],
        user=Identity(upn="alice@contoso.com", display_name="Alice Example"),
        object=ObjectRef(type="file", name="budget.xlsx", url="https://contoso.sharepoint.com/sites/fin/budget.xlsx"),
        sensitive_types=[
            SensitiveType(
                name="Credit Card Number",
                count=3,
                confidence=85,
                detected_values=[DetectedValue(name="Credit Card Number", value=SECRET_VALUE)],
            )
        ],
        links=Links(incident=f"https://security.microsoft.com/incidents/{number}?tid={TENANT}"),
        related=Related(alert_ids=["da1", "da2"], incident_ids=[number]),
    )
    for key, value in kw.items():
        setattr(event, key, value)
    return event


def alert(alert_id: str = "da1", incident_id: str = "42", updated: str = "2026-11-23T10:01:00Z", **kw: Any) -> DlpEvent:
    event = DlpEvent(
        id=f"alert:{alert_id}",
        idempotency_key=f"alert:{alert_id}@{updated}",
        kind="alert",
        operation="DlpAlert",
        event_time="2026-11-23T09:59:00Z",
        updated_time=updated,
        tenant_id=TENANT,
        source="contoso-graph",
        workload="Exchange",
        severity="medium",
        status="new",
        title=f"Alert {alert_id}: email with credit card numbers",
        user=Identity(upn="bob@contoso.com"),
        object=ObjectRef(type="email", subject="Q3 card list", message_id="<m1@contoso.com>"),
        links=Links(
            alert=f"https://security.microsoft.com/alerts/{alert_id}",
            incident=f"https://security.microsoft.com/incidents/{incident_id}" if incident_id else "",
        ),
        related=Related(alert_ids=[alert_id], incident_ids=[incident_id] if incident_id else []),
    )
    for key, value in kw.items():
        setattr(event, key, value)
    return event
