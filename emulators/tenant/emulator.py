"""``TenantEmulator``: the public face of the tenant emulator (see ``docs/emulator.md``).

::

    emu = TenantEmulator(EmulatorConfig(seed=1, audit_records=2000, days=3), state_dir=tmp_path)
    with emu.serve(tls=True) as server:          # server.url, server.ca_file
        ...                                      # emu.tenant_id, client_id, client_secret, publisher_id
        emu.faults.update(throttle_rate=0.1)     # fault knobs at runtime
        emu.clock.advance(days=8)                # emulated time: content expires, tokens age
        emu.expected_audit_ids(("DLP.All",))     # ground truth, computed by streaming
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from emulators.httpd import EmulatorServer
from emulators.tenant.app import TenantApp
from emulators.tenant.audit_queries import AuditQueries
from emulators.tenant.config import Clock, EmulatorConfig, FaultConfig
from emulators.tenant.generator import CONTENT_TYPES, EXPIRY_SECONDS, Blob, Dataset
from emulators.tenant.graph import GraphSecurity
from emulators.tenant.guard import Guard
from emulators.tenant.identity import AppRegistration, Identity, load_certificate
from emulators.tenant.management import ManagementApi
from emulators.tenant.tokens import TokenIssuer, TokenVerifier, load_or_create_key


def _derived(seed: int, what: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dlpfwd-emulator/{seed}/{what}"))


class TenantEmulator:
    """One emulated Microsoft 365 tenant with one app registration (more can be added)."""

    def __init__(self, config: EmulatorConfig | None = None, state_dir: str | Path = "./dlpfwd-emulator") -> None:
        self.config = config or EmulatorConfig()
        cfg = self.config
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.clock = Clock()
        self.faults: FaultConfig = cfg.faults
        self.tenant_id = cfg.tenant_id or _derived(cfg.seed, "tenant")
        self.client_id = cfg.client_id or _derived(cfg.seed, "client")
        self.client_secret = (
            cfg.client_secret or "emu~" + hashlib.sha256(f"{cfg.seed}/secret".encode()).hexdigest()[:32]
        )
        self.publisher_id = cfg.publisher_id or _derived(cfg.seed, "publisher")
        if cfg.anchor is not None:
            anchor = cfg.anchor.timestamp()
        else:
            anchor = (time.time() - cfg.blob_latency) // 60 * 60
        self.data = Dataset(cfg, anchor, self.tenant_id)
        key = load_or_create_key(self.state_dir / "signing-key.pem")
        self.issuer = TokenIssuer(key, self.tenant_id, now=self.clock.time)
        self.verifier = TokenVerifier(self.issuer.jwks(), now=self.clock.time)
        self.identity = Identity(self.tenant_id, cfg.tenant_domain, self.issuer, lambda: self.faults.token_lifetime)
        self.identity.register(
            AppRegistration(self.client_id, "dlpfwd emulator app", secret=self.client_secret, roles=cfg.roles)
        )
        self.guard = Guard(self.faults, self.verifier, self.tenant_id, cfg.seed)
        self.graph = GraphSecurity(self.data, self.guard, self.clock)
        self.audit_queries = AuditQueries(self.data, self.guard, self.clock, cfg.audit_query_seconds)
        self.management = ManagementApi(
            self.data, self.guard, self.clock, cfg.management_page_size, cfg.blob_cache_mb << 20
        )
        self.app = TenantApp(now=self.clock.time)
        from emulators.tenant.control import Control

        for part in (self.identity, self.graph, self.audit_queries, self.management, Control(self)):
            part.install(self.app)
        self.app.info = {"tenant_id": self.tenant_id, "client_id": self.client_id, "publisher_id": self.publisher_id}
        self.server: EmulatorServer | None = None

    # ------------------------------------------------------------------ serving
    def serve(self, tls: bool = True, port: int = 0, host: str = "127.0.0.1") -> EmulatorServer:
        """An :class:`EmulatorServer` for this tenant (start it, or use it as a context manager).

        With TLS, the CA that signed the server certificate is ``server.ca_file`` (under
        ``state_dir/tls``); point clients' ``ca_bundle`` at it.
        """
        self.server = EmulatorServer(self.app, host=host, port=port, tls=tls, cert_dir=self.state_dir / "tls")
        return self.server

    @property
    def url(self) -> str:
        return self.server.url if self.server else ""

    # ------------------------------------------------------------------ apps and roles
    def register_certificate_app(
        self, cert_pem: bytes | str, roles: dict[str, list[str]] | None = None, client_id: str | None = None
    ) -> str:
        """Register an app that authenticates with ``cert_pem``'s key; returns its client id."""
        cid = client_id or str(uuid.uuid4())
        app = AppRegistration(cid, "dlpfwd certificate app", roles=roles if roles is not None else self.config.roles)
        app.add_certificate(load_certificate(cert_pem))
        self.identity.register(app)
        return cid

    def set_roles(self, audience: str, roles: Iterable[str], client_id: str | None = None) -> None:
        """Change the application permissions granted on ``audience`` (new tokens carry them)."""
        app = self.identity.apps[client_id or self.client_id]
        app.roles = {**app.roles, audience: list(roles)}

    # ------------------------------------------------------------------ ground truth
    def _now(self, now: float | dt.datetime | None) -> float:
        if now is None:
            return self.clock.time()
        return now.timestamp() if isinstance(now, dt.datetime) else float(now)

    def expected_blobs(
        self,
        content_type: str = "DLP.All",
        now: float | dt.datetime | None = None,
        since: float | dt.datetime | None = None,
    ) -> list[Blob]:
        """Every blob of the feed a client can list and fetch at ``now`` (default: emulated now),
        optionally only those with ``contentCreated >= since`` (a source's first-run start)."""
        t = self._now(now)
        first = self._now(since) if since is not None else float("-inf")
        out = []
        for k in range(self.data.blobs_until(t)):
            b = self.data.blob(content_type, k)
            if b is None or b.visible_at > t or b.created < t - EXPIRY_SECONDS or b.created < first:
                continue
            if content_type != "DLP.All" and not self.data.blob_indices(b):
                continue
            out.append(b)
        return out

    def _indices(
        self, content_types: Iterable[str], now: float | dt.datetime | None, since: float | dt.datetime | None = None
    ) -> Iterator[tuple[Blob, int]]:
        for ct in content_types:
            if ct not in CONTENT_TYPES:
                raise ValueError(f"unknown content type {ct!r}")
            for b in self.expected_blobs(ct, now, since):
                for i in self.data.blob_indices(b):
                    yield b, i

    def expected_audit_ids(
        self,
        content_types: Iterable[str] = ("DLP.All",),
        now: float | dt.datetime | None = None,
        since: float | dt.datetime | None = None,
    ) -> set[str]:
        """Ids of the well-formed records in the fetchable blobs of ``content_types`` (each once)."""
        return {
            self.data.record_id(i) for _, i in self._indices(content_types, now, since) if not self.data.is_malformed(i)
        }

    def expected_malformed_ids(
        self,
        content_types: Iterable[str] = ("DLP.All",),
        now: float | dt.datetime | None = None,
        since: float | dt.datetime | None = None,
    ) -> set[str]:
        """Ids of the wrong-shaped records (``malformed_rate``) in the fetchable blobs."""
        return {
            self.data.record_id(i) for _, i in self._indices(content_types, now, since) if self.data.is_malformed(i)
        }

    def expected_duplicate_ids(
        self, content_types: Iterable[str] = ("DLP.All",), now: float | dt.datetime | None = None
    ) -> set[str]:
        """Ids that appear in more than one blob of a feed (``duplicate_rate``)."""
        out: set[str] = set()
        for ct in content_types:
            for b in self.expected_blobs(ct, now):
                out.update(self.data.record_id(i) for i in b.duplicates if self.data.in_feed(i, ct))
        return out

    def expected_late_blobs(self, content_type: str = "DLP.All") -> list[Blob]:
        """Blobs that appear in listings ``late_delay`` seconds after their contentCreated."""
        last = self.data.blobs_until(self.clock.time() + self.faults.late_delay)
        return [b for k in range(last) if (b := self.data.blob(content_type, k)) and b.late]

    def expected_audit_records(
        self, content_types: Iterable[str] = ("DLP.All",), detections: bool = False, now: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """The well-formed records themselves (streamed; each id once)."""
        seen: set[str] = set()
        for _, i in self._indices(content_types, now):
            rid = self.data.record_id(i)
            if rid in seen or self.data.is_malformed(i):
                continue
            seen.add(rid)
            yield self.data.record(i, detections)

    def expected_alert_ids(self, service_source: str | None = None, now: float | dt.datetime | None = None) -> set[str]:
        """Ids of the alerts that exist at ``now`` (all, or those of one ``serviceSource``)."""
        d = self.data
        count = d.alerts_until(self._now(now))
        if service_source is None:
            return {d.alert_id(j) for j in range(count)}
        want_dlp = service_source == "dataLossPrevention"
        ids = set()
        for j in range(count):
            if d.is_defender_alert(j) != want_dlp and (want_dlp or d.alert(j)["serviceSource"] == service_source):
                ids.add(d.alert_id(j))
        return ids

    def expected_incident_ids(self, now: float | dt.datetime | None = None) -> set[str]:
        """Ids of the incidents that exist (with all their alerts) at ``now``."""
        return {self.data.incident_id(m) for m in range(self.data.incidents_until(self._now(now)))}

    def stats(self) -> dict[str, Any]:
        """Request counters, injected faults and PublisherIdentifier accounting."""
        return {
            "requests": dict(self.guard.requests),
            "injected": dict(self.guard.injected),
            "publishers": dict(self.guard.publishers),
            "tokens_issued": self.identity.tokens_issued,
            "partial_responses": self.graph.partial_responses,
            "blobs_served": self.management.blobs_served,
            "blob_cache_hits": self.management.cache_hits,
        }
