"""Pieces shared by the Microsoft sources: endpoint resolution per cloud, token claims,
time windows and cursor time formatting."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from forwarder.api import ApiClient, RequestBudget, Tokens, app_share
from forwarder.auth import AuthSettings, TokenProvider, cloud_of
from forwarder.clouds import Cloud
from forwarder.schema import parse_time
from forwarder.source import Source, SourceContext


def cloud(auth: AuthSettings) -> Cloud:
    return cloud_of(auth)


def resource_scope(resource_root: str) -> str:
    """``https://graph.microsoft.com`` -> ``https://graph.microsoft.com/.default``."""
    return resource_root.rstrip("/") + "/.default"


def token_roles(token: str) -> list[str]:
    """The ``roles`` claim of a JWT access token (application permissions), unverified.

    Used only to explain a missing permission in ``dlpfwd check``; never for a decision that
    matters for security. Returns [] for anything that is not a readable JWT.
    """
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return []
    roles = claims.get("roles") if isinstance(claims, dict) else None
    return [str(r) for r in roles] if isinstance(roles, list) else []


def iso(t: dt.datetime) -> str:
    """A cursor/filter time: ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``."""
    t = t.astimezone(dt.UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}"
    return text + "Z"


def parse_cursor_time(value: Any) -> dt.datetime | None:
    return parse_time(value) if isinstance(value, str) and value else None


def windows(start: dt.datetime, end: dt.datetime, size: dt.timedelta) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Consecutive ``[a, b)`` windows of at most ``size`` covering ``[start, end)``."""
    a = start
    while a < end:
        b = min(a + size, end)
        yield a, b
        a = b


def count_windows(start: dt.datetime, end: dt.datetime, size: dt.timedelta) -> int:
    if end <= start:
        return 0
    total = (end - start) / size
    return int(total) + (0 if total == int(total) else 1)


class BackfillProgress:
    """Counts for a backfill progress line: windows done/total, records, rate and ETA."""

    def __init__(self, total: int, done: int = 0, clock: Any = None) -> None:
        import time

        self.clock = clock or time.monotonic
        self.started = self.clock()
        self.total = total
        self.done_at_start = done
        self.records = 0

    def add(self, records: int) -> None:
        self.records += records

    def info(self, done: int, **extra: Any) -> dict[str, Any]:
        elapsed = max(1e-6, self.clock() - self.started)
        out: dict[str, Any] = {"done": done, "total": self.total, "records": self.records}
        out["rate"] = f"{self.records / elapsed:.0f}/s"
        finished = done - self.done_at_start
        if finished > 0 and self.total > done:
            remaining = (self.total - done) * elapsed / finished
            out["eta"] = _duration(remaining)
        out.update(extra)
        return out


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class ApiSource(Source):
    """A source reading one Microsoft API through one :class:`ApiClient` per instance.

    The client is built on first use (no network at construction). Tests inject the HTTP
    ``transport``, the ``tokens`` provider and the ``sleep`` used for back-off; in production
    they are httpx's, a :class:`TokenProvider` from ``settings.auth`` and ``time.sleep``. The
    token provider, and the Graph request budget of :meth:`_graph_client`, are the app's
    (:func:`forwarder.api.app_share` of the settings): shared with the write-back, the status
    sync and the incident commands that use this source's app in the same process.
    Subclasses' settings carry ``auth``, ``http`` and ``max_retry_wait``.
    """

    def __init__(
        self,
        name: str,
        settings: Any,
        context: SourceContext,
        *,
        transport: httpx.BaseTransport | None = None,
        tokens: Tokens | None = None,
        sleep: Any = None,
    ) -> None:
        super().__init__(name, settings, context)
        self.tenant_id = settings.auth.tenant_id
        self._transport = transport
        self._tokens = tokens
        self._sleep = sleep
        self.client: ApiClient | None = None

    def _build_client(self, base_url: str, resource_root: str, budget: RequestBudget, **options: Any) -> ApiClient:
        """Build ``self.client`` for ``base_url`` with a token for ``resource_root``'s scope."""
        s = self.settings
        tokens = self._tokens or app_share(s).tokens(lambda: TokenProvider(s.auth, s.http))
        self._tokens = tokens
        if self._sleep is not None:
            options["sleep"] = self._sleep
        self.client = ApiClient(
            base_url=base_url,
            tokens=tokens,
            scope=resource_scope(resource_root),
            http=s.http,
            log=self.log,
            budget=budget,
            max_wait=s.max_retry_wait,
            transport=self._transport,
            **options,
        )
        return self.client

    def _graph_client(self, what: str) -> ApiClient:
        """The Microsoft Graph client (``graph_url`` or the cloud's, ``api_version``), built once;
        for sources whose settings carry ``graph_url``, ``api_version`` and ``requests_per_minute``."""
        if self.client is not None:
            return self.client
        s = self.settings
        the_cloud = cloud(s.auth)
        root = (s.graph_url or the_cloud.graph).rstrip("/")
        return self._build_client(
            f"{root}/{s.api_version}",
            the_cloud.graph,
            app_share(s).budget(s.requests_per_minute),
            headers={"Prefer": "include-unknown-enum-members"},
            retry_partial=True,
            what=f"{what} {self.name}",
        )

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
