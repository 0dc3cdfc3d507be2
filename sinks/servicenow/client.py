"""A small ServiceNow Table API client: authentication (basic or OAuth client credentials),
requests, and the classification of every answer into one of our error families.

Classification (:class:`TableError` carries it):

* 429, 5xx, a 200 that is not JSON (a hibernating developer instance) and transport errors
  -> retriable, with the server's ``Retry-After`` when it gave one;
* 401 -> fatal: the credentials (the message names the settings to check);
* 403 -> fatal: an ACL, business rule or data policy refused the write (roles, mandatory fields);
* 400 ``Invalid table`` -> fatal (the ``table`` setting); other 400 -> this record is rejected;
* 404 -> not found (the caller decides: a deleted ticket is created again).

Messages carry ServiceNow's ``error.message`` / ``error.detail``, never headers or credentials.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from forwarder.errors import FatalError, RetriableError
from forwarder.http import make_client, map_exceptions, retry_after
from sinks.servicenow.settings import ServiceNowSettings

RETRY = "retry"
REJECT = "reject"
FATAL = "fatal"
NOT_FOUND = "not_found"


class TableError(Exception):
    """A Table API request failed; ``kind`` is RETRY, REJECT, FATAL or NOT_FOUND; ``status`` is
    the HTTP status where callers tell answers of one kind apart (403), else 0."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None, status: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after
        self.status = status


class TableClient:
    """Table API calls against one instance and table; thread-confined like the sink."""

    def __init__(self, settings: ServiceNowSettings, setting_path: str, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.path = setting_path  # e.g. "sinks.servicenow" -- for messages naming a setting
        self.base = settings.instance_url.rstrip("/")
        self.http = client or make_client(settings.http, headers={"Accept": "application/json"})
        self._token = ""
        self._token_expiry = 0.0

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------ auth

    def _auth_headers(self) -> dict[str, str]:
        if self.settings.auth == "oauth":
            return {"Authorization": f"Bearer {self._bearer()}"}
        return {}

    def _basic(self) -> httpx.BasicAuth | None:
        if self.settings.auth != "basic":
            return None
        password = self.settings.password.reveal() if self.settings.password else ""
        return httpx.BasicAuth(self.settings.username, password)

    def _bearer(self) -> str:
        if self._token and time.monotonic() < self._token_expiry:
            return self._token
        s = self.settings
        url = s.token_url or f"{self.base}/oauth_token.do"
        form = {
            "grant_type": "client_credentials",
            "client_id": s.client_id,
            "client_secret": s.client_secret.reveal() if s.client_secret else "",
        }
        with map_exceptions("ServiceNow OAuth token endpoint"):
            response = self.http.post(url, data=form)
        if response.status_code in (400, 401, 403):
            raise FatalError(
                f"ServiceNow refused the OAuth client credentials (HTTP {response.status_code} "
                f"{_oauth_error(response)}): check {self.path}.client_id and {self.path}.client_secret, that the "
                "client_credentials grant is enabled (glide.oauth.inbound.client.credential.grant_type.enabled) "
                "and that the OAuth entity has an OAuth Application User"
            )
        if response.status_code == 429 or response.status_code >= 500:
            raise RetriableError(
                f"ServiceNow OAuth token endpoint answered HTTP {response.status_code}", retry_after(response)
            )
        try:
            body = response.json()
            token = str(body["access_token"])
            lifetime = float(body.get("expires_in", 1800))
        except (ValueError, KeyError, TypeError):
            raise RetriableError(
                f"ServiceNow OAuth token endpoint answered HTTP {response.status_code} without a token"
            ) from None
        self._token = token
        self._token_expiry = time.monotonic() + max(0.0, lifetime - 60.0)
        return token

    # ------------------------------------------------------------------ requests

    def request(
        self, method: str, path: str, params: dict[str, str] | None = None, body: dict[str, Any] | None = None
    ) -> dict[str, Any] | list[Any]:
        """One Table API call; returns ``result``. Raises :class:`TableError` (or FatalError from auth)."""
        return self.request_with_headers(method, path, params, body)[0]

    def request_with_headers(
        self, method: str, path: str, params: dict[str, str] | None = None, body: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any] | list[Any], httpx.Headers]:
        """:meth:`request`, also returning the response headers (``X-Total-Count``, ``Link``)."""
        url = f"{self.base}/api/now/table/{path}"
        for attempt in (1, 2):
            headers = self._auth_headers()
            try:
                with map_exceptions(f"ServiceNow {method} {self.settings.table}"):
                    response = self.http.request(
                        method,
                        url,
                        params=params,
                        json=body,
                        headers=headers,
                        auth=self._basic() or httpx.USE_CLIENT_DEFAULT,
                    )
            except RetriableError as exc:
                raise TableError(RETRY, str(exc), exc.retry_after) from None
            if response.status_code == 401 and self.settings.auth == "oauth" and attempt == 1:
                self._token = ""  # expired or revoked early: fetch a new token once
                continue
            return self._result(method, response), response.headers
        raise AssertionError("unreachable")  # pragma: no cover

    def _result(self, method: str, response: httpx.Response) -> dict[str, Any] | list[Any]:
        status = response.status_code
        what = f"ServiceNow {method} {self.settings.table}"
        if status in (200, 201):
            try:
                body = response.json()
            except ValueError:
                hint = " (the instance is hibernating)" if "Hibernating" in response.text else ""
                raise TableError(RETRY, f"{what}: HTTP {status} with a body that is not JSON{hint}") from None
            result = body.get("result") if isinstance(body, dict) else None
            if not isinstance(result, dict | list):
                raise TableError(RETRY, f"{what}: HTTP {status} without a result")
            return result
        if status == 204:
            return {}
        detail = _error_text(response)
        if status == 429 or status >= 500 or status == 408:
            raise TableError(RETRY, f"{what}: HTTP {status} {detail}", retry_after(response))
        if status == 401:
            names = (
                f"{self.path}.client_id/client_secret"
                if self.settings.auth == "oauth"
                else f"{self.path}.username/password"
            )
            raise TableError(FATAL, f"{what}: HTTP 401 {detail}: check {names}")
        if status == 403:
            raise TableError(
                FATAL,
                f"{what}: HTTP 403 {detail}: the integration user lacks a role or an ACL, business rule or data "
                f"policy refused the write (check the user's roles on {self.path}.table = "
                f"{self.settings.table!r} and mandatory fields in {self.path}.fields)",
                status=403,
            )
        if status == 404:
            raise TableError(NOT_FOUND, f"{what}: HTTP 404 {detail}")
        if status == 400 and "invalid table" in detail.lower():
            raise TableError(FATAL, f"{what}: HTTP 400 {detail}: check {self.path}.table")
        if status in (400, 413, 415, 422):
            raise TableError(REJECT, f"{what}: HTTP {status} {detail}")
        raise TableError(RETRY, f"{what}: HTTP {status} {detail}", retry_after(response))


def _error_text(response: httpx.Response) -> str:
    """``message: detail`` from ServiceNow's error envelope, or a short note when there is none."""
    try:
        body = response.json()
    except ValueError:
        return "(no JSON error body)"
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return "(no error envelope)"
    message, detail = str(err.get("message") or ""), err.get("detail")
    text = f"{message}: {detail}" if detail else message
    return text[:500]


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    return " ".join(str(body.get(k, "")) for k in ("error", "error_description") if body.get(k))[:200]
