"""The endpoint's request handling, independent of the HTTP server that carries it.

``POST /v1/status-changes`` is checked in this order, and the first failure answers; nothing
is stored unless every check passes:

1. ``Content-Type`` is ``application/json`` (optionally ``; charset=utf-8``), no
   ``Content-Encoding``                                              -> 415
2. no ``Transfer-Encoding``, a ``Content-Length`` is present         -> 411
   (a chunked body cannot be size-checked before it is read)
3. ``Content-Length`` is a number of at most ``max_body`` bytes      -> 400 / 413, before the body is read
4. the body is read; authenticated by HMAC signature or bearer token -> 401
5. the body matches the schema (:mod:`forwarder.serve.request`)       -> 400 naming the field
6. the change id is new, or known with the same content               -> 409 if reused for another change
7. the change is stored durably in the status-sync inbox             -> 503 if the store fails
8. ``202 Accepted`` with ``{"changeId", "incidentId", "duplicate"}``

Errors answer ``{"error": {"code", "message", "field"?}}``. One log line per request with
the outcome, client address, change and incident ids, and the names (never the values) of the
fields changed; secrets, signatures, headers and bodies are never logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from forwarder.serve.auth import Authenticator, Unauthorized
from forwarder.serve.inbox import ChangeIdReused, Inbox
from forwarder.serve.request import Invalid, parse

STATUS_CHANGES = "/v1/status-changes"
HEALTH = "/healthz"
ROUTES: dict[str, tuple[str, ...]] = {STATUS_CHANGES: ("POST",), HEALTH: ("GET", "HEAD")}


@dataclass
class Answer:
    """An HTTP answer: status, JSON body, extra headers; ``close`` drops the connection after it
    (the request's body was not read)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False


def error(status: int, code: str, message: str, field_name: str = "", **headers: str) -> Answer:
    body: dict[str, Any] = {"code": code, "message": message}
    if field_name:
        body["field"] = field_name
    return Answer(status, {"error": body}, dict(headers))


class StatusEndpoint:
    """Handles the endpoint's requests; see the module docstring for the checks and codes."""

    def __init__(
        self,
        authenticator: Authenticator,
        inbox: Inbox,
        max_body: int = 65536,
        log: logging.Logger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.authenticator = authenticator
        self.inbox = inbox
        self.max_body = max_body
        self.log = log or logging.getLogger("dlpfwd.serve")
        self.clock = clock

    def handle(
        self, method: str, path: str, headers: Mapping[str, str], read_body: Callable[[int], bytes], client: str = ""
    ) -> Answer:
        """Answer one request. ``headers`` have lower-case names; ``read_body(n)`` reads the
        body's ``n`` bytes and is called only once every check before it passed."""
        target = path.split("?", 1)[0]
        methods = ROUTES.get(target)
        if methods is None:
            answer = error(404, "NotFound", f"no such endpoint (POST {STATUS_CHANGES}, GET {HEALTH})")
        elif method not in methods:
            answer = error(405, "MethodNotAllowed", f"{method} is not allowed here", Allow=", ".join(methods))
        elif target == HEALTH:
            answer = self._health()
        else:
            return self._status_change(headers, read_body, client)
        if headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers:
            answer.close = True  # an unread body must not be taken for the next request
        self._log(answer, method, target, client)
        return answer

    # ------------------------------------------------------------------ endpoints

    def _health(self) -> Answer:
        if self.inbox.healthy():
            return Answer(200, {"status": "ok"})
        return error(503, "StoreUnavailable", "the state store does not answer", **{"Retry-After": "5"})

    def _status_change(self, headers: Mapping[str, str], read_body: Callable[[int], bytes], client: str) -> Answer:
        answer = self._precheck(headers)
        if answer is not None:
            answer.close = True
            self._log(answer, "POST", STATUS_CHANGES, client)
            return answer
        length = int(headers["content-length"].strip())
        body = read_body(length)
        now = self.clock()
        try:
            method = self.authenticator.check(headers, body, now)
        except Unauthorized as exc:
            challenge = ", ".join({"hmac": "HMAC-SHA256", "bearer": "Bearer"}[m] for m in self.authenticator.methods())
            answer = error(401, "Unauthorized", exc.reason, **{"WWW-Authenticate": challenge or "Bearer"})
            self._log(answer, "POST", STATUS_CHANGES, client, reason=exc.reason)
            return answer
        try:
            change = parse(body, dt.datetime.fromtimestamp(now, dt.UTC), self.authenticator.replay_window)
        except Invalid as exc:
            answer = error(400, exc.code, exc.message, exc.field)
            self._log(answer, "POST", STATUS_CHANGES, client, auth=method, reason=exc.message)
            return answer
        ids = {"change": change.change_id, "incident": change.incident_id}
        try:
            new = self.inbox.submit(change)
        except ChangeIdReused:
            answer = error(409, "ChangeIdReused", "changeId was already used for a different change", "changeId")
            self._log(answer, "POST", STATUS_CHANGES, client, auth=method, **ids)
            return answer
        except ValueError as exc:  # the inbox's own validation (ours is stricter; kept as a safety net)
            answer = error(400, "InvalidField", str(exc)[:300])
            self._log(answer, "POST", STATUS_CHANGES, client, auth=method, **ids)
            return answer
        except Exception as exc:  # noqa: BLE001 - any storage failure: not accepted, the client retries
            answer = error(503, "StoreUnavailable", "the change could not be stored; retry", **{"Retry-After": "5"})
            self._log(answer, "POST", STATUS_CHANGES, client, auth=method, reason=type(exc).__name__, **ids)
            return answer
        answer = Answer(202, {"changeId": change.change_id, "incidentId": change.incident_id, "duplicate": not new})
        fields = ",".join(change.fields())
        self._log(
            answer, "POST", STATUS_CHANGES, client, auth=method, duplicate=str(not new).lower(), fields=fields, **ids
        )
        return answer

    def _precheck(self, headers: Mapping[str, str]) -> Answer | None:
        media = headers.get("content-type", "")
        kind, _, params = media.partition(";")
        charset = params.strip().lower().replace('"', "")
        if kind.strip().lower() != "application/json" or charset not in ("", "charset=utf-8"):
            return error(415, "UnsupportedMediaType", "expected Content-Type: application/json")
        if headers.get("content-encoding", "identity").strip().lower() != "identity":
            return error(415, "UnsupportedMediaType", "Content-Encoding is not supported: send the JSON as is")
        if "transfer-encoding" in headers:
            return error(411, "LengthRequired", "send a Content-Length (chunked bodies are not accepted)")
        raw = headers.get("content-length")
        if raw is None:
            return error(411, "LengthRequired", "Content-Length is required")
        if not raw.strip().isdigit() or len(raw.strip()) > 12:
            return error(400, "InvalidContentLength", "Content-Length is not a number")
        length = int(raw.strip())
        if length > self.max_body:
            return error(413, "PayloadTooLarge", f"the body is larger than {self.max_body} bytes")
        if length == 0:
            return error(400, "InvalidJson", "the body is empty: expected a JSON object")
        return None

    # ------------------------------------------------------------------ logging

    def _log(self, answer: Answer, method: str, path: str, client: str, **facts: str) -> None:
        level = logging.INFO if answer.status < 400 else logging.WARNING
        if answer.status in (404, 405):
            level = logging.INFO
        if path == HEALTH and answer.status == 200:
            level = logging.DEBUG  # probes every few seconds would drown the log
        outcome = answer.body.get("error", {}).get("code", "") if answer.status >= 400 else "accepted"
        extra = " ".join(f"{k}={_clean(v)}" for k, v in facts.items() if v)
        self.log.log(level, "%s %s -> %d %s client=%s %s", method, path, answer.status, outcome, client, extra)


def _clean(value: str) -> str:
    """One log token: control characters dropped, quoted when it has spaces, at most 200 characters."""
    text = "".join(c if c.isprintable() else "?" for c in value)[:200]
    return '"' + text.replace('"', "'") + '"' if " " in text else text
