"""End to end: a signed request to ``dlpfwd serve`` resolves a Defender XDR incident (tenant
emulator) and its ServiceNow ticket (ServiceNow emulator) through the status sync; a repeat of
the request writes nothing on either side."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulators.httpd import EmulatorServer
from emulators.servicenow.app import ServiceNowApp
from forwarder.serve import build_server
from forwarder.sync import inbox
from tests.itsm.test_sync_end_to_end import (
    ANALYST,
    Deployment,
    Tenant,
    config_text,
    first_incident,
    served_tenant,
    ticket_of,
)

from .conftest import change, post_signed, settings_for, trust


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Tenant]:
    with served_tenant(tmp_path) as t:
        yield t


@pytest.fixture
def snow(tmp_path: Path) -> Iterator[tuple[ServiceNowApp, EmulatorServer]]:
    app = ServiceNowApp(users={"dlpfwd": "pa55word", ANALYST[0]: ANALYST[1]})
    with EmulatorServer(app, cert_dir=tmp_path / "sn-certs") as server:
        yield app, server


def test_an_inbound_change_resolves_the_incident_and_the_ticket_once(tmp_path, tenant, snow, certs) -> None:
    sn_app, sn = snow
    deployment = Deployment(config_text(tmp_path, tenant, sn))
    endpoint: Any = None
    try:
        deployment.poll()
        deployment.sync()
        ident = first_incident(sn_app)
        endpoint = build_server(settings_for(certs), deployment.fw.store).start()
        body = change(incidentId=ident, status="resolved", classification="falsePositive",
                      determination="notMalicious", comment="Closed by SOAR playbook 17", source="soar:17")  # fmt: skip
        with httpx.Client(base_url=endpoint.url, verify=trust(certs)) as client:
            assert post_signed(client, body).status_code == 202
            result = deployment.sync()
            assert result.applied >= 1, result
            graph = deployment.defender()
            try:
                incident = graph.get(ident)
            finally:
                graph.close()
            assert (incident["status"], incident["classification"], incident["determination"]) == (
                "resolved",
                "falsePositive",
                "notMalicious",
            )
            assert any("Closed by SOAR playbook 17" in (c.get("comment") or "") for c in incident.get("comments") or [])
            assert ticket_of(sn_app, ident)["state"] == "6"  # the ticket follows: Resolved
            writes = (sn_app.writes, len(tenant.writes))
            # the same request again: accepted as a repeat, nothing new on either side
            assert post_signed(client, body).json()["duplicate"] is True
            deployment.sync()
            assert (sn_app.writes, len(tenant.writes)) == writes
            assert inbox.stats(deployment.fw.store)["pending"] == 0
    finally:
        if endpoint is not None:
            endpoint.stop()
        deployment.close()
