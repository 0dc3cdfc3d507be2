"""What every API call goes through: fault injection, rate limits, bearer-token checks.

Error bodies follow each service: Graph's ``{"error": {"code", "message", "innerError":
{"date", "request-id", "client-request-id"}}}`` and the Management API's
``{"error": {"code": "AFnnnnn", "message"}}`` (invalid tokens there get ASP.NET's
``{"Message": "Authorization has been denied for this request."}``).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any

from emulators.httpd import Request, Response
from emulators.tenant.config import FaultConfig
from emulators.tenant.tokens import TokenError, TokenVerifier, bearer

GRAPH_WWW_AUTHENTICATE = (
    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
    'client_id="00000003-0000-0000-c000-000000000000"'
)


def graph_error(
    status: int, code: str, message: str, request: Request | None = None, headers: dict[str, str] | None = None
) -> Response:
    """A Graph error response."""
    request_id = str(uuid.uuid4())
    inner = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id,
        "client-request-id": (request.header("client-request-id") if request else "") or request_id,
    }
    h = {"request-id": request_id, "client-request-id": inner["client-request-id"], **(headers or {})}
    return Response.json({"error": {"code": code, "message": message, "innerError": inner}}, status, h)


def mgmt_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """A Management Activity API error response."""
    return Response.json({"error": {"code": code, "message": message}}, status, headers)


class RateWindow:
    """Counts requests per key over the last 60 s (sliding window)."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, key: str, limit: int, now: float) -> bool:
        """Record a request; False when ``limit`` (per minute) is exceeded (the request is not counted)."""
        if limit <= 0:
            return True  # no limit, no accounting
        with self._lock:
            q = self._hits[key]
            while q and q[0] <= now - 60:
                q.popleft()
            if len(q) >= limit:
                return False
            q.append(now)
            return True

    def retry_after(self, key: str, now: float) -> int:
        with self._lock:
            q = self._hits[key]
            return max(1, int(q[0] + 60 - now) + 1) if q else 1


class Guard:
    """Applies faults and authorization; one per emulator."""

    def __init__(self, faults: FaultConfig, verifier: TokenVerifier, tenant_id: str, seed: int) -> None:
        self.faults = faults
        self.verifier = verifier
        self.tenant_id = tenant_id
        self._random = random.Random(f"{seed}/faults")
        self._rlock = threading.Lock()
        self.rates = RateWindow()
        self.injected: dict[str, int] = defaultdict(int)
        self.requests: dict[str, int] = defaultdict(int)  # by API
        self.publishers: dict[str, int] = defaultdict(int)  # Management API calls by PublisherIdentifier

    def roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._rlock:
            return self._random.random() < rate

    def delay(self) -> None:
        if self.faults.latency > 0:
            time.sleep(self.faults.latency)

    # ------------------------------------------------------------------ Graph
    def graph(
        self, request: Request, audience: Iterable[str], roles_any: Iterable[str], handler: Callable[[], Response]
    ) -> Response:
        """Run ``handler`` for a Graph call after faults and token checks."""
        self.requests["graph"] += 1
        self.delay()
        claims_or_error = self._graph_auth(request, audience, roles_any)
        if isinstance(claims_or_error, Response):
            return claims_or_error
        claims = claims_or_error
        app = str(claims.get("appid", ""))
        limit = self.faults.graph_rate_limit
        now = time.time()
        if not self.rates.hit(f"graph/{app}", limit, now) or self.roll(self.faults.throttle_rate):
            self.injected["graph_429"] += 1
            retry = self.rates.retry_after(f"graph/{app}", now) if limit else self.faults.retry_after
            return graph_error(
                429,
                "TooManyRequests",
                "Too many requests.",
                request,
                {"Retry-After": str(retry)},
            )
        if self.roll(self.faults.error_rate):
            self.injected["graph_5xx"] += 1
            if self.roll(0.5):
                return graph_error(503, "serviceNotAvailable", "Service unavailable", request, {"Retry-After": "1"})
            return graph_error(500, "UnknownError", "An unexpected error occurred.", request)
        response = handler()
        response.headers.setdefault("request-id", str(uuid.uuid4()))
        return response

    def _graph_auth(
        self, request: Request, audience: Iterable[str], roles_any: Iterable[str]
    ) -> dict[str, Any] | Response:
        token = bearer(request.header("authorization"))
        try:
            claims = self.verifier.verify(token, audience)
        except TokenError as exc:
            message = {
                "missing": "Access token is empty.",
                "audience": "Access token validation failure. Invalid audience.",
                "expired": "Lifetime validation failed, the token is expired.",
            }.get(exc.reason, f"Access token validation failure. {exc.message}")
            return graph_error(
                401, "InvalidAuthenticationToken", message, request, {"WWW-Authenticate": GRAPH_WWW_AUTHENTICATE}
            )
        if claims.get("tid") != self.tenant_id:
            return graph_error(401, "InvalidAuthenticationToken", "Access token validation failure.", request)
        wanted = list(roles_any)
        have = [str(r) for r in claims.get("roles", [])]
        if wanted and not set(wanted) & set(have):
            return graph_error(
                403,
                "Forbidden",
                f"Missing application roles. API required roles: {','.join(wanted)}. "
                f"application roles: {','.join(have)}.",
                request,
            )
        return claims

    # ------------------------------------------------------------------ Management Activity API
    def management(
        self,
        request: Request,
        audience: Iterable[str],
        tenant: str,
        method_name: str,
        handler: Callable[[dict[str, Any]], Response],
    ) -> Response:
        """Run ``handler(claims)`` for a Management API call after faults and token checks."""
        self.requests["management"] += 1
        publisher = request.query.get("PublisherIdentifier") or _ci(request.query, "publisheridentifier") or ""
        self.publishers[publisher or "(none)"] += 1
        self.delay()
        token = bearer(request.header("authorization"))
        try:
            claims = self.verifier.verify(token, audience)
        except TokenError:
            return Response.json({"Message": "Authorization has been denied for this request."}, 401)
        if not _is_guid(tenant):
            return mgmt_error(400, "AF20013", f"The tenant ID '{tenant}' in the URL is not a valid GUID.")
        if tenant.lower() != str(claims.get("tid", "")).lower():
            return mgmt_error(
                401, "AF20010", f"The tenant ID passed in the URL ({tenant}) does not match the tenant ID in the token."
            )
        roles = [str(r) for r in claims.get("roles", [])]
        if "ActivityFeed.Read" not in roles and "ActivityFeed.ReadDlp" not in roles:
            return mgmt_error(
                401,
                "AF10001",
                f"The permission set ({' '.join(roles)}) sent in the request does not include the expected permission.",
            )
        now = time.time()
        limit = self.faults.management_rate_limit
        if not self.rates.hit(f"mgmt/{publisher}", limit, now) or self.roll(self.faults.throttle_rate):
            self.injected["management_429"] += 1
            return mgmt_error(
                429, "AF429", f"Too many requests. Method={method_name}, PublisherId={publisher or '00000000'}"
            )
        if self.roll(self.faults.error_rate):
            self.injected["management_5xx"] += 1
            if self.roll(0.5):
                return mgmt_error(503, "AF50000", "An internal error occurred. Retry the request.")
            return mgmt_error(500, "AF50000", "An internal error occurred. Retry the request.")
        return handler(claims)


def _ci(query: dict[str, str], name: str) -> str:
    for k, v in query.items():
        if k.lower() == name:
            return v
    return ""


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36
