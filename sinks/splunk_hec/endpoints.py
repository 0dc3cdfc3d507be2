"""HEC endpoints: one HTTP client and one data channel per endpoint, load balancing and failover.

Each configured URL becomes an :class:`Endpoint` with its own ``httpx.Client`` (its own
connection pool and cookie jar, so a load balancer's sticky cookie keeps acknowledgement polls
on the indexer that holds the acks) and its own channel GUID, sent as
``X-Splunk-Request-Channel`` with every request when acknowledgement is on (without it no
channel is sent, so a token that requires acknowledgement answers code 10 and the sink says
which setting to change instead of silently leaving acks unpolled). Acks are polled on the endpoint and channel
that returned them.

:class:`EndpointPool` orders endpoints for one request: ``round_robin`` rotates the starting
endpoint per request; ``failover`` always starts with the first healthy one in configuration
order. An endpoint that failed (network error, busy) is put last for ``cooldown`` seconds; when
every endpoint is cooling down they are all tried anyway (the host's back-off paces retries).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx

from forwarder.http import map_exceptions

ROUND_ROBIN = "round_robin"
FAILOVER = "failover"


class Endpoint:
    """One HEC base URL with its client and data channel."""

    def __init__(self, url: str, client: httpx.Client, headers: dict[str, str], use_channel: bool = True) -> None:
        self.url = url.rstrip("/")
        self.client = client
        self.channel = str(uuid.uuid4())
        self.headers = headers
        self.use_channel = use_channel
        self.channel_refusals = 0  # consecutive code-11 answers to sends
        self.down_until = 0.0
        self.last_error = ""
        self._urls: dict[str, httpx.URL] = {}

    def new_channel(self) -> str:
        """Start a new data channel (after the server forgot ours: code 11)."""
        self.channel = str(uuid.uuid4())
        return self.channel

    def post(self, path: str, body: bytes, extra: dict[str, str] | None = None) -> httpx.Response:
        """POST ``body`` to ``path`` with the token and channel headers; transport errors become
        :class:`~forwarder.errors.NotConnected` / :class:`~forwarder.errors.RetriableError`."""
        headers = dict(self.headers)
        if self.use_channel:
            headers["X-Splunk-Request-Channel"] = self.channel
        headers.update(extra or {})
        url = self._urls.get(path)
        if url is None:  # parsed once per path: httpx re-parses a str URL on every request
            url = self._urls[path] = httpx.URL(self.url + path)
        with map_exceptions(f"HEC {self.url}{path}"):
            return self.client.post(url, content=body, headers=headers)

    def get(self, path: str) -> httpx.Response:
        with map_exceptions(f"HEC {self.url}{path}"):
            return self.client.get(self.url + path)

    def mark_down(self, reason: str, cooldown: float, now: float | None = None) -> None:
        self.down_until = (now if now is not None else time.monotonic()) + cooldown
        self.last_error = reason

    def mark_up(self) -> None:
        self.down_until = 0.0
        self.last_error = ""

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"Endpoint({self.url})"


class EndpointPool:
    """Chooses the order in which endpoints are tried for one request."""

    def __init__(
        self,
        urls: list[str],
        make_client: Callable[[], httpx.Client],
        headers: dict[str, str],
        mode: str = ROUND_ROBIN,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        use_channel: bool = True,
    ) -> None:
        if not urls:
            raise ValueError("at least one HEC URL is required")
        self.endpoints = [Endpoint(u, make_client(), headers, use_channel) for u in urls]
        self.mode = mode
        self.cooldown = cooldown
        self.clock = clock
        self._next = 0

    def order(self) -> list[Endpoint]:
        """Endpoints to try, healthy ones first in balancing order, cooling-down ones last."""
        now = self.clock()
        n = len(self.endpoints)
        if self.mode == ROUND_ROBIN:
            start = self._next % n
            self._next += 1
            rotated = self.endpoints[start:] + self.endpoints[:start]
        else:
            rotated = list(self.endpoints)
        healthy = [e for e in rotated if e.down_until <= now]
        resting = sorted((e for e in rotated if e.down_until > now), key=lambda e: e.down_until)
        return healthy + resting

    def fail(self, endpoint: Endpoint, reason: str) -> None:
        endpoint.mark_down(reason, self.cooldown, self.clock())

    def close(self) -> None:
        for e in self.endpoints:
            e.close()
