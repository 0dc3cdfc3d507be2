"""Authenticated HTTP for the Microsoft APIs, shared by the sources, the correlation write-back and
the incident commands: one :class:`ApiClient` per API host and source instance, shared by its
download threads.

What every call gets, so no source can forget it:

* a bearer token from :class:`forwarder.auth.TokenProvider`, renewed ahead of expiry; a 401
  invalidates it and the call is repeated once with a fresh one (tokens expiring mid-run);
* the instance's request budget (requests per minute, a token bucket); every client built for
  one configured source's app in a process (the source, the correlation write-back, the status
  sync, the incident commands) draws from the same budget and the same token provider
  (:func:`app_share`), so ``requests_per_minute`` holds for the app as a whole;
* fixed query parameters (the Management API's ``PublisherIdentifier``) and headers (Graph's
  ``Prefer: include-unknown-enum-members``);
* retries of 429 / 500 / 502 / 503 / 504, the Management API's ``AF429`` (HTTP 403) and,
  for Graph, 206 partial results,
  honouring ``Retry-After`` or backing off exponentially with jitter, up to ``max_wait``
  seconds in all, then :class:`~forwarder.errors.RetriableError` with the wait to the host;
* a refusal to send the token to any host but the API's own (``@odata.nextLink``,
  ``NextPageUri`` and ``contentUri`` are validated first);
* the server's clock from its ``Date`` header (:meth:`ApiClient.now`), so windows computed
  for APIs with hard time limits (7 days, 24 hours) do not suffer from local clock skew.

Error messages name the request by a short description, never with headers or tokens.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson

from forwarder.errors import FatalError, RetriableError
from forwarder.http import make_client, map_exceptions, retry_after
from forwarder.settings import HttpSettings

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class Tokens(Protocol):
    """What :class:`ApiClient` needs from a token provider."""

    def token(self, scope: str) -> str: ...

    def invalidate(self, scope: str) -> None: ...


class RequestBudget:
    """A token bucket of ``per_minute`` requests (burst up to ``burst``); 0 means unlimited.

    Shared by every thread of one source instance and by every other client of that source's
    app in the process (:func:`app_share`); each source instance has its own.
    """

    def __init__(self, per_minute: float, burst: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(max(1, burst))
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> None:
        if self.rate <= 0:
            return
        while True:
            with self._lock:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                wait = (1.0 - self.tokens) / self.rate
                self.waited += wait
            sleep(wait)


class AppShare:
    """The request budget and token provider of one configured source's app, built on first use
    and then handed to every :class:`ApiClient` built for that app in this process. Thread-safe.

    The first caller's parameters build them; later callers (same settings, so the same
    parameters) get the same objects."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._budget: RequestBudget | None = None
        self._tokens: Tokens | None = None

    def budget(self, per_minute: float, burst: int = 10) -> RequestBudget:
        """The app's :class:`RequestBudget` (``per_minute``, ``burst`` used when it is built)."""
        with self._lock:
            if self._budget is None:
                self._budget = RequestBudget(per_minute, burst)
            return self._budget

    def tokens(self, make: Callable[[], Tokens]) -> Tokens:
        """The app's token provider, ``make()`` the first time (one token cache per app)."""
        with self._lock:
            if self._tokens is None:
                self._tokens = make()
            return self._tokens


_shares: dict[int, AppShare] = {}
_shares_lock = threading.Lock()


def app_share(settings: object) -> AppShare:
    """The :class:`AppShare` of the source whose plugin settings object is ``settings``.

    Keyed by the identity of that object: one ``[[sources]]`` entry of one loaded configuration,
    which the runtime hands to the source and the write-back, status sync and incident commands
    read from the same :class:`~forwarder.config.Config`. So within a ``dlpfwd run`` they share
    one budget and one token cache, while two configurations loaded in one process (tests, a
    reload) never share state. The entry is dropped when the settings object is garbage; an
    object that cannot be weakly referenced gets a fresh, unshared :class:`AppShare`.
    """
    key = id(settings)
    with _shares_lock:
        share = _shares.get(key)
        if share is None:
            share = AppShare()
            try:
                # dict.pop is atomic: the finalizer (run by the GC, maybe inside this lock) takes no lock.
                weakref.finalize(settings, _shares.pop, key, None)
            except TypeError:
                return share
            _shares[key] = share
        return share


def api_error(response: httpx.Response) -> tuple[str, str]:
    """``(code, message)`` of a Microsoft error body (``{"error": {"code", "message"}}``), or ("", text)."""
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        return "", response.text[:300]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("code", "")), str(err.get("message", ""))[:300]
        if isinstance(err, str):
            return err, str(body.get("error_description", body.get("message", "")))[:300]
        return str(body.get("code", "")), str(body.get("message", ""))[:300]
    return "", ""


class ApiClient:
    """See the module docstring. ``base_url`` is the API root (scheme + host [+ port] + path)."""

    def __init__(
        self,
        *,
        base_url: str,
        tokens: Tokens,
        scope: str,
        http: HttpSettings,
        log: logging.Logger,
        budget: RequestBudget,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        max_wait: float = 120.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        max_attempts: int = 8,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        what: str = "API",
        retry_partial: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self._origin = (parts.scheme, parts.hostname, parts.port)
        self.tokens = tokens
        self.scope = scope
        self.log = log
        self.budget = budget
        self.params = dict(params or {})
        self.max_wait = max_wait
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_attempts = max_attempts
        self.sleep = sleep
        self.what = what
        self.retry_partial = retry_partial
        kwargs: dict[str, Any] = {"headers": {"Accept": "application/json", **(headers or {})}}
        if transport is not None:
            kwargs["transport"] = transport
        self.client = make_client(http, **kwargs)
        self.skew = 0.0  # server clock - local clock, seconds
        self.requests = 0
        self.retries = 0
        self.throttled = 0

    # ------------------------------------------------------------------ clock

    def now(self) -> dt.datetime:
        """The server's idea of now, in whole seconds (local clock corrected by the last ``Date`` header)."""
        return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.skew)).replace(microsecond=0)

    def _observe_date(self, response: httpx.Response) -> None:
        value = response.headers.get("Date")
        if not value:
            return
        if value.count("GMT") > 1:
            # Two Date headers joined by a comma (some servers send their own besides the
            # framework's): the last one is the application's.
            value = ", ".join(value.split(", ")[-2:])
        try:
            server = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return
        if server.tzinfo is None:
            server = server.replace(tzinfo=dt.UTC)
        skew = (server - dt.datetime.now(dt.UTC)).total_seconds()
        # The header has whole seconds: ignore sub-2-second differences.
        self.skew = skew if abs(skew) >= 2.0 else 0.0

    # ------------------------------------------------------------------ requests

    def url(self, path_or_url: str) -> str:
        """An absolute URL on this API's host; raises FatalError for a URL on any other host."""
        if path_or_url.startswith(("http://", "https://")):
            parts = urlsplit(path_or_url)
            if (parts.scheme, parts.hostname, parts.port) != self._origin:
                raise FatalError(
                    f"{self.what}: refusing to follow a link to {parts.scheme}://{parts.hostname} "
                    f"(not the configured API host {self._origin[1]}); the token is never sent elsewhere"
                )
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        what: str = "",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request with auth, budget and retries; returns any non-retried response."""
        url = self.url(path_or_url)
        what = what or f"{self.what} {method} {urlsplit(url).path}"
        query = dict(params or {})
        if self.params:
            present = {k.lower() for k in urlsplit(url).query.split("&") if k}
            for k, v in self.params.items():
                if not any(p.startswith(k.lower() + "=") for p in present):
                    query[k] = v
        waited = 0.0
        refreshed = 0
        attempt = 0
        while True:
            attempt += 1
            self.budget.acquire()
            token = self.tokens.token(self.scope)
            with map_exceptions(what):
                response = self.client.request(
                    method,
                    url,
                    params=query or None,
                    content=orjson.dumps(json) if json is not None else None,
                    headers={
                        "Authorization": f"Bearer {token}",
                        **({"Content-Type": "application/json"} if json is not None else {}),
                        **(headers or {}),
                    },
                )
            self.requests += 1
            self._observe_date(response)
            status = response.status_code
            if status == 401 and refreshed < 3:
                # Token expired or revoked mid-run: get a fresh one and repeat (a few times at
                # most: a short-lived token can expire again while a retry waits).
                self.tokens.invalidate(self.scope)
                refreshed += 1
                continue
            throttled = status == 429 or (status == 403 and _is_af429(response))
            # Graph answers 206 (with a Warning header) when a provider behind it failed: the
            # page may be incomplete, so it is asked again rather than taken as complete.
            partial = status == 206 and self.retry_partial
            if status in RETRY_STATUSES or throttled or partial:
                if throttled:
                    self.throttled += 1
                wait = retry_after(response)
                if wait is None:
                    ceiling = min(self.backoff_max, self.backoff_initial * (2 ** (attempt - 1)))
                    wait = random.uniform(ceiling / 2, ceiling)
                code, _ = api_error(response)
                if attempt >= self.max_attempts or waited + wait > self.max_wait:
                    raise RetriableError(
                        f"{what}: HTTP {status}{' ' + code if code else ''} after {attempt} attempts", retry_after=wait
                    )
                self.retries += 1
                self.log.info("%s: HTTP %s%s, retrying in %.1fs", what, status, f" {code}" if code else "", wait)
                self.sleep(wait)
                waited += wait
                continue
            return response

    def get_json(self, path_or_url: str, *, params: dict[str, Any] | None = None, what: str = "") -> Any:
        """GET and decode JSON; non-2xx raises (see :meth:`raise_for`)."""
        response = self.request("GET", path_or_url, params=params, what=what)
        self.raise_for(response, what or path_or_url)
        return _decode(response, what or path_or_url)

    def raise_for(
        self,
        response: httpx.Response,
        what: str,
        permission: str = "",
        permanent: Callable[[str], Exception] | None = None,
    ) -> None:
        """Raise for a non-2xx response: FatalError for 401/403 (naming ``permission``);
        RetriableError for 408/409/423/429 and 5xx; for any other 4xx (400 bad value, 404 gone...)
        ``permanent(message)`` when given (the caller's "give up on this item" error), else
        FatalError, as for anything else."""
        status = response.status_code
        if status < 300:
            return
        code, message = api_error(response)
        detail = f"HTTP {status}{' ' + code if code else ''}{': ' + message if message else ''}"
        if status in (401, 403):
            need = (
                f"; the app needs the {permission} application permission (admin consent granted)" if permission else ""
            )
            raise FatalError(f"{what}: access denied ({detail}){need}")
        if status in (408, 409, 423, 429) or status >= 500:
            raise RetriableError(f"{what}: {detail}")
        if permanent is not None and 400 <= status < 500:
            raise permanent(f"{what}: {detail}")
        raise FatalError(f"{what}: {detail}")

    def close(self) -> None:
        self.client.close()


def _decode(response: httpx.Response, what: str) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise RetriableError(f"{what}: response is not JSON (HTTP {response.status_code})") from None


def _is_af429(response: httpx.Response) -> bool:
    if b"AF429" not in response.content[:2000]:
        return False
    code, _ = api_error(response)
    return code == "AF429"


def graph_pages(client: ApiClient, path: str, params: dict[str, Any] | None, what: str, permission: str = "") -> Any:
    """Yield each page's ``value`` list of a Graph collection, following ``@odata.nextLink``.

    The next link is followed verbatim (it already carries the query) after checking it stays
    on the API host.
    """
    url: str | None = path
    query = params
    while url:
        response = client.request("GET", url, params=query, what=what)
        client.raise_for(response, what, permission)
        body = _decode(response, what)
        if not isinstance(body, dict):
            raise RetriableError(f"{what}: expected a JSON object, got {type(body).__name__}")
        value = body.get("value")
        yield value if isinstance(value, list) else []
        url = body.get("@odata.nextLink") or None
        query = None
