"""Configuration of the tenant emulator: the data to generate, the app registration, the faults."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any

#: Application permissions granted to the emulator's app by default, per resource audience.
DEFAULT_ROLES: dict[str, list[str]] = {
    "https://graph.microsoft.com": [
        "SecurityAlert.ReadWrite.All",
        "SecurityIncident.ReadWrite.All",
        "AuditLogsQuery.Read.All",
    ],
    "https://manage.office.com": ["ActivityFeed.Read", "ActivityFeed.ReadDlp"],
    "https://monitor.azure.com": [],
}


@dataclass
class FaultConfig:
    """Fault knobs. Rates are probabilities in [0, 1] per request or per blob.

    Request-level (random at serve time): ``throttle_rate`` (429 with Retry-After / AF429),
    ``error_rate`` (5xx), ``latency`` (seconds added to each API call), ``partial_rate``
    (Graph list answered 206 with a ``Warning`` header), ``token_lifetime`` (seconds; short-lived
    tokens), ``expand_failure_rate`` (incident lists with ``$expand=alerts`` and a ``$filter``
    answer 500, as large tenants see). Data-level (deterministic from the seed, reported by the ``expected_*`` API):
    ``duplicate_rate`` (a blob repeats records of the previous blob), ``malformed_rate`` (a
    record is replaced by a wrong-shaped one), ``late_rate`` (a blob becomes listable
    ``late_delay`` seconds after its contentCreated), ``out_of_order_rate`` (a record's
    CreationTime is hours older than its neighbours'). ``graph_rate_limit`` (requests per
    minute per app, real: 150) and ``management_rate_limit`` (per PublisherIdentifier) throttle
    like the services do once exceeded; 0 = unlimited.
    """

    throttle_rate: float = 0.0
    retry_after: int = 2
    error_rate: float = 0.0
    latency: float = 0.0
    partial_rate: float = 0.0
    token_lifetime: float = 3599.0
    duplicate_rate: float = 0.0
    malformed_rate: float = 0.0
    late_rate: float = 0.0
    late_delay: float = 3 * 3600.0
    out_of_order_rate: float = 0.0
    expand_failure_rate: float = 0.0
    graph_rate_limit: int = 0
    management_rate_limit: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def update(self, **changes: Any) -> None:
        """Change knobs at runtime (thread-safe); unknown names raise ``TypeError``."""
        names = {f.name for f in fields(self)}
        for name in changes:
            if name not in names:
                raise TypeError(f"unknown fault knob {name!r}; known: {', '.join(sorted(names))}")
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)

    def snapshot(self) -> FaultConfig:
        with self._lock:
            return replace(self)


@dataclass
class EmulatorConfig:
    """What the emulator serves.

    ``audit_records`` DLP audit records spread over the ``days`` before ``anchor`` (default:
    the start time, rounded down to the minute), ``records_per_blob`` per content blob,
    one Graph alert per ``alert_every`` audit records (every 7th alert a non-DLP Defender alert
    for the same user), ``alerts_per_incident`` alerts per incident. ``seed`` makes everything
    reproducible. ``roles`` maps a resource audience to the app's granted application permissions.
    ``blob_cache_mb``: memory for generated content blobs, kept compressed (0: none).
    ``live``: activity goes on after the anchor at the same rate (for 7 days), appearing as the
    (emulated) clock passes it; without it the data ends at the anchor.
    """

    seed: int = 1
    audit_records: int = 500
    days: float = 2.0
    anchor: dt.datetime | None = None
    records_per_blob: int = 50
    blob_latency: float = 600.0
    alert_every: int = 10
    alerts_per_incident: int = 2
    users: int = 40
    tenant_id: str = ""
    client_id: str = ""
    client_secret: str = ""
    publisher_id: str = ""
    tenant_domain: str = "contoso.onmicrosoft.com"
    roles: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_ROLES.items()})
    faults: FaultConfig = field(default_factory=FaultConfig)
    live: bool = False
    blob_cache_mb: int = 128
    management_page_size: int = 200
    audit_query_seconds: float = 1.0


class Clock:
    """Emulated time: real time plus an offset that tests move forward with :meth:`advance`."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.time(), dt.UTC)

    def advance(self, seconds: float = 0.0, minutes: float = 0.0, hours: float = 0.0, days: float = 0.0) -> None:
        """Move emulated time forward (content ages, tokens expire, late blobs appear)."""
        with self._lock:
            self._offset += seconds + 60 * minutes + 3600 * hours + 86400 * days
