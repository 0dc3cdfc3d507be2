"""Fixtures: a tenant emulator served over TLS, and httpx/msal clients that trust its CA."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import msal
import pytest
import requests

from emulators.tenant import EmulatorConfig, FaultConfig, TenantEmulator
from emulators.tenant.tokens import GRAPH, MANAGEMENT


class Tenant:
    """A served emulator plus helpers to get tokens and call it."""

    def __init__(self, emu: TenantEmulator, server: Any) -> None:
        self.emu = emu
        self.server = server
        self.url = server.url
        self.http = httpx.Client(
            verify=ssl.create_default_context(cafile=server.ca_file), base_url=server.url, timeout=30
        )
        self.feed = f"/api/v1.0/{emu.tenant_id}/activity/feed"

    def msal_app(self, credential: Any = None, client_id: str | None = None) -> msal.ConfidentialClientApplication:
        session = requests.Session()
        session.verify = self.server.ca_file
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        return msal.ConfidentialClientApplication(
            client_id or self.emu.client_id,
            client_credential=credential if credential is not None else self.emu.client_secret,
            authority=f"{self.url}/{self.emu.tenant_id}",
            http_client=session,
            instance_discovery=False,
        )

    def token(self, resource: str = GRAPH) -> str:
        """A fresh token straight from the token endpoint (no msal cache)."""
        r = self.http.post(
            f"/{self.emu.tenant_id}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.emu.client_id,
                "client_secret": self.emu.client_secret,
                "scope": f"{resource}/.default",
            },
        )
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def graph(self, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token(GRAPH)}"}
        return self.http.get(path if path.startswith("http") else f"/v1.0/security/{path}", headers=headers, **kw)

    def mgmt(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token(MANAGEMENT)}", **kw.pop("headers", {})}
        url = path if path.startswith(("http", "/")) else f"{self.feed}/{path}"
        return self.http.request(method, url, headers=headers, **kw)


def serve(tmp_path: Any, **config: Any) -> Iterator[Tenant]:
    faults = config.pop("faults", None) or FaultConfig()
    cfg = EmulatorConfig(
        **{"seed": 7, "audit_records": 600, "days": 2, "records_per_blob": 25, **config}, faults=faults
    )
    emu = TenantEmulator(cfg, state_dir=tmp_path)
    with emu.serve(tls=True) as server:
        tenant = Tenant(emu, server)
        try:
            yield tenant
        finally:
            tenant.http.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenant]:
    """One read-only tenant for tests that do not change faults, roles, time or state."""
    yield from serve(tmp_path_factory.mktemp("emu"))


@pytest.fixture
def tenant(tmp_path: Any) -> Iterator[Tenant]:
    """A private tenant the test may change."""
    yield from serve(tmp_path)
