"""A ServiceNow Table API emulator, faithful enough for the ``servicenow`` sink and its tests.

Endpoints (``{v}`` is empty, ``v1/`` or ``v2/``):

* ``GET /api/now/{v}table/{table}`` -- list: ``sysparm_query`` (see :mod:`.query`),
  ``sysparm_fields``, ``sysparm_limit`` (default 10000) / ``sysparm_offset``,
  ``sysparm_display_value`` (``true`` / ``all`` for a few choice fields), ``X-Total-Count``
  and ``Link`` headers. On no rows v2/unversioned answer ``{"result": []}``, v1 answers 404.
* ``GET /api/now/{v}table/{table}/{sys_id}``, ``POST`` (201), ``PATCH``/``PUT`` (200),
  ``DELETE`` (204) -- one record per request.
* ``POST /oauth_token.do`` -- form-encoded ``client_credentials`` (or ``password``) grant ->
  ``{"access_token", "token_type": "Bearer", "expires_in", "scope"}``.

Records get ``sys_id`` (32 hex), ``number`` (``INC0010001``... for ``incident``, ``SIR0010001``...
for ``sn_si_incident``), ``sys_created_on``/``sys_updated_on`` (``YYYY-MM-DD HH:MM:SS`` UTC,
whole seconds), ``sys_created_by``/``sys_updated_by`` (the user *name*), ``sys_mod_count``;
every value is a string, as ServiceNow returns them. ``comments``/``work_notes`` are journal
fields: a write appends a ``sys_journal_field`` row and the record shows ``""``. On ``incident``
the priority is derived from impact x urgency (the base Priority lookup rules).

Errors use ServiceNow's envelope ``{"error": {"message", "detail"}, "status": "failure"}``.

Knobs for tests and dry runs (thread-safe): :meth:`throttle` (next N Table API requests get 429
with ``Retry-After``), :meth:`fail` (next N get a 5xx), :meth:`fail_after_write` (next N writes
are committed, then answered 500 -- the "did it land?" case), ``hibernating`` (200 + HTML, as a
sleeping developer instance answers), ``tables`` (restrict valid table names), ``read_only``
(users whose writes fail with 403 ACL). ``writes`` counts committed writes; ``requests``
logs ``(method, path, query)``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import secrets
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode

import orjson

from emulators.httpd import App, Request, Response
from emulators.servicenow import query as encoded_query

NUMBER_PREFIXES = {
    "incident": "INC",
    "sn_si_incident": "SIR",
    "problem": "PRB",
    "change_request": "CHG",
    "sc_task": "SCTASK",
    "sn_si_task": "SIT",
}
DEFAULT_STATE = {"incident": "1", "sn_si_incident": "10"}
INACTIVE_STATES = {"incident": ("7", "8"), "sn_si_incident": ("3", "7")}  # closed, canceled
JOURNAL_FIELDS = ("comments", "work_notes")
#: Reference columns -> the table they point to (rendered as {"link", "value"}; dot-walkable in
#: sysparm_fields, e.g. ``assigned_to.email``).
REFERENCES = {
    "assigned_to": "sys_user",
    "caller_id": "sys_user",
    "resolved_by": "sys_user",
    "closed_by": "sys_user",
    "assignment_group": "sys_user_group",
}
JOURNAL_TABLE = "sys_journal_field"
# Base Priority lookup rules: (impact, urgency) -> priority.
PRIORITY = {
    ("1", "1"): "1",
    ("1", "2"): "2",
    ("1", "3"): "3",
    ("2", "1"): "2",
    ("2", "2"): "3",
    ("2", "3"): "4",
    ("3", "1"): "3",
    ("3", "2"): "4",
    ("3", "3"): "5",
}
DISPLAY = {
    "incident": {
        "state": {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved", "7": "Closed", "8": "Canceled"},
        "impact": {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"},
        "urgency": {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"},
        "priority": {"1": "1 - Critical", "2": "2 - High", "3": "3 - Moderate", "4": "4 - Low", "5": "5 - Planning"},
    },
    "sn_si_incident": {
        "state": {"10": "Draft", "16": "Analysis", "18": "Contain", "19": "Eradicate", "3": "Closed", "7": "Cancelled"},
    },
}
_TABLE_PATH = r"/api/now/(?P<version>v1/|v2/)?table/(?P<table>[A-Za-z0-9_]+)"
_SYS_ID = r"/(?P<sys_id>[A-Za-z0-9]+)"


def now_text() -> str:
    """The current time as ServiceNow stores it: ``YYYY-MM-DD HH:MM:SS`` UTC."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def error(status: int, message: str, detail: str | None, headers: dict[str, str] | None = None) -> Response:
    """A response in ServiceNow's error envelope."""
    return Response.json({"error": {"message": message, "detail": detail}, "status": "failure"}, status, headers)


class ServiceNowApp(App):
    """The emulator; ``users`` maps user name -> password, ``clients`` maps OAuth client id ->
    (secret, OAuth Application User name)."""

    def __init__(
        self,
        users: dict[str, str] | None = None,
        clients: dict[str, tuple[str, str]] | None = None,
        token_lifetime: int = 1799,
    ) -> None:
        super().__init__()
        self.users = dict(users if users is not None else {"admin": "admin"})
        self.clients = dict(clients if clients is not None else {})
        self.token_lifetime = token_lifetime
        self.tables: set[str] | None = None  # None: any table name is valid
        self.read_only: set[str] = set()
        # table -> its columns; unknown columns are then ignored in queries and writes, as on
        # an instance (a table missing from here accepts any column)
        self.columns: dict[str, set[str]] = {}
        self.hibernating = False
        self.lock_inactive = False  # True: writes to records with active=false get 403 (closed tickets)
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        self.writes = 0
        self.requests: list[tuple[str, str, str]] = []
        self.tokens_issued = 0
        self._tokens: dict[str, tuple[str, float]] = {}
        self._numbers: dict[str, int] = {}
        self._throttle = 0
        self._retry_after = 0
        self._fail = 0
        self._fail_status = 503
        self._fail_after_write = 0
        self._lock = threading.RLock()
        self.route("POST", "/oauth_token.do", self.oauth_token)
        self.route("GET", _TABLE_PATH, self.list_records)
        self.route("POST", _TABLE_PATH, self.create)
        self.route("GET", _TABLE_PATH + _SYS_ID, self.read)
        self.route("PATCH", _TABLE_PATH + _SYS_ID, self.update)
        self.route("PUT", _TABLE_PATH + _SYS_ID, self.update)
        self.route("DELETE", _TABLE_PATH + _SYS_ID, self.delete)

    # ------------------------------------------------------------------ knobs

    def throttle(self, count: int, retry_after: int = 1) -> None:
        """Answer the next ``count`` Table API requests with 429 and ``Retry-After: retry_after``."""
        with self._lock:
            self._throttle, self._retry_after = count, retry_after

    def fail(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` Table API requests with ``status`` (a 5xx)."""
        with self._lock:
            self._fail, self._fail_status = count, status

    def fail_after_write(self, count: int) -> None:
        """Commit the next ``count`` writes, then answer them 500 as if the reply was lost."""
        with self._lock:
            self._fail_after_write = count

    def table(self, name: str) -> list[dict[str, Any]]:
        """Copies of every record of table ``name`` in creation order (for tests)."""
        with self._lock:
            return [dict(r) for r in self.records.get(name, {}).values()]

    def add_user(self, user_name: str, email: str = "", name: str = "") -> str:
        """Create a ``sys_user`` record (for assignees); returns its sys_id."""
        stamp = now_text()
        sys_id = uuid.uuid4().hex
        with self._lock:
            self.records.setdefault("sys_user", {})[sys_id] = {
                "sys_id": sys_id,
                "user_name": user_name,
                "email": email,
                "name": name or user_name,
                "active": "true",
                "sys_created_on": stamp,
                "sys_updated_on": stamp,
                "sys_mod_count": "0",
            }
        return sys_id

    def journal(self, sys_id: str, element: str = "") -> list[str]:
        """Journal entries (oldest first) of a record, optionally of one element (for tests)."""
        rows = self.table(JOURNAL_TABLE)
        return [r["value"] for r in rows if r["element_id"] == sys_id and (not element or r["element"] == element)]

    # ------------------------------------------------------------------ dispatch

    def handle(self, request: Request) -> Response:
        with self._lock:
            self.requests.append((request.method, request.path, request.raw_target.partition("?")[2]))
        if request.path.startswith("/api/now/"):
            early = self._preflight(request)
            if early is not None:
                return early
        return super().handle(request)

    def not_found(self, request: Request) -> Response:
        return error(400, "Requested URI does not represent any resource", None)

    def _preflight(self, request: Request) -> Response | None:
        with self._lock:
            if self._throttle > 0:
                self._throttle -= 1
                return error(
                    429,
                    "Rate limit exceeded",
                    "Rate limit of 100 requests per hour for Table API exceeded",
                    {"Retry-After": str(self._retry_after)},
                )
            if self._fail > 0:
                self._fail -= 1
                return error(self._fail_status, "Service Unavailable", "The instance is temporarily unavailable")
        if self.hibernating:
            page = b"<html><head><title>Instance Hibernating page</title></head><body>Hibernating</body></html>"
            return Response(200, page, {"Content-Type": "text/html"})
        user = self._authenticate(request)
        if user is None:
            return error(401, "User Not Authenticated", "Required to provide Auth information")
        request.headers["x-emulator-user"] = user
        return None

    def _authenticate(self, request: Request) -> str | None:
        header = request.header("authorization")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                name, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            known = self.users.get(name)
            return name if known is not None and secrets.compare_digest(known, password) else None
        if scheme.lower() == "bearer":
            with self._lock:
                entry = self._tokens.get(value)
            if entry is not None and entry[1] > time.time():
                return entry[0]
        return None

    # ------------------------------------------------------------------ OAuth

    def oauth_token(self, request: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        grant = form.get("grant_type", "")
        client = self.clients.get(form.get("client_id", ""))
        denied = Response.json({"error_description": "access_denied", "error": "server_error"}, 401)
        if client is None or not secrets.compare_digest(client[0], form.get("client_secret", "")):
            return denied
        if grant == "client_credentials":
            user = client[1]
        elif grant == "password":
            user = form.get("username", "")
            known = self.users.get(user)
            if known is None or not secrets.compare_digest(known, form.get("password", "")):
                return denied
        else:
            return Response.json({"error_description": "access_denied", "error": "unsupported_grant_type"}, 400)
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = (user, time.time() + self.token_lifetime)
            self.tokens_issued += 1
        return Response.json(
            {"scope": "useraccount", "token_type": "Bearer", "expires_in": self.token_lifetime, "access_token": token}
        )

    def expire_tokens(self) -> None:
        """Make every issued access token invalid (the client must fetch a new one)."""
        with self._lock:
            self._tokens.clear()

    # ------------------------------------------------------------------ Table API

    def _table(self, request: Request) -> tuple[str, Response | None]:
        assert request.match is not None
        name = request.match.group("table")
        if self.tables is not None and name not in self.tables and name != JOURNAL_TABLE:
            return name, error(400, f"Invalid table {name}", f"Table {name} does not exist")
        return name, None

    def list_records(self, request: Request) -> Response:
        table, problem = self._table(request)
        if problem:
            return problem
        try:
            limit = int(request.query.get("sysparm_limit", "10000") or 10000)
            offset = int(request.query.get("sysparm_offset", "0") or 0)
        except ValueError:
            return error(400, "Invalid sysparm_limit or sysparm_offset", None)
        if limit < 0 or offset < 0:
            return error(400, "Invalid sysparm_limit or sysparm_offset", None)
        columns = self._columns(table)
        parsed = encoded_query.parse(request.query.get("sysparm_query", ""), columns)
        for name, value in request.query.items():  # name=value pairs are an alternative form
            if not name.startswith("sysparm_"):
                parsed.blocks = parsed.blocks or [[]]
                for block in parsed.blocks:
                    block.append([encoded_query.equals(name, value)])
        with self._lock:
            rows = [dict(r) for r in self.records.get(table, {}).values() if parsed.matches(r)]
        rows = parsed.sort(rows)
        total = len(rows)
        page = rows[offset : offset + limit]
        if not page and request.match and request.match.group("version") == "v1/":
            return _no_record()
        headers = {"X-Total-Count": str(total)}
        links = self._links(request, table, total, limit, offset)
        if links:
            headers["Link"] = links
        return Response.json({"result": [self._render(table, r, request) for r in page]}, 200, headers)

    def _links(self, request: Request, table: str, total: int, limit: int, offset: int) -> str:
        if limit <= 0:
            return ""
        base = f"{self.base_url}/api/now/table/{table}"
        params = {k: v for k, v in request.query.items() if k not in ("sysparm_offset", "sysparm_limit")}

        def url(start: int) -> str:
            return base + "?" + urlencode({**params, "sysparm_limit": limit, "sysparm_offset": start})

        last = max(0, ((total - 1) // limit) * limit) if total else 0
        parts = [f'<{url(0)}>;rel="first"']
        if offset > 0:
            parts.append(f'<{url(max(0, offset - limit))}>;rel="prev"')
        if offset + limit < total:
            parts.append(f'<{url(offset + limit)}>;rel="next"')
        parts.append(f'<{url(last)}>;rel="last"')
        return ",".join(parts)

    def read(self, request: Request) -> Response:
        table, problem = self._table(request)
        if problem:
            return problem
        assert request.match is not None
        with self._lock:
            record = self.records.get(table, {}).get(request.match.group("sys_id"))
            record = dict(record) if record else None
        if record is None:
            return _no_record()
        return Response.json({"result": self._render(table, record, request)})

    def create(self, request: Request) -> Response:
        table, body, problem = self._write_request(request)
        if problem:
            return problem
        user = request.header("x-emulator-user")
        if user in self.read_only:
            return error(403, "Operation Failed", "ACL Exception Insert Failed due to security constraints")
        stamp = now_text()
        with self._lock:
            sys_id = uuid.uuid4().hex
            record: dict[str, Any] = {}
            prefix = NUMBER_PREFIXES.get(table)
            if prefix:
                self._numbers[table] = self._numbers.get(table, 10000) + 1
                record["number"] = f"{prefix}{self._numbers[table]:07d}"
            if table in DEFAULT_STATE:
                record.update(state=DEFAULT_STATE[table], impact="3", urgency="3", active="true", opened_at=stamp)
                record["opened_by"] = user
            journal = self._apply(table, record, body)
            record.update(
                sys_id=sys_id,
                sys_class_name=table,
                sys_created_on=stamp,
                sys_created_by=user,
                sys_updated_on=stamp,
                sys_updated_by=user,
                sys_mod_count="0",
            )
            self.records.setdefault(table, {})[sys_id] = record
            return self._written(table, record, journal, user, stamp, request, 201)

    def update(self, request: Request) -> Response:
        table, body, problem = self._write_request(request)
        if problem:
            return problem
        assert request.match is not None
        user = request.header("x-emulator-user")
        with self._lock:
            record = self.records.get(table, {}).get(request.match.group("sys_id"))
            if record is None:
                return _no_record()
            locked = self.lock_inactive and record.get("active") == "false"
            if user in self.read_only or locked:
                return error(403, "Operation Failed", "ACL Exception Update Failed due to security constraints")
            stamp = now_text()
            journal = self._apply(table, record, body)
            record.update(
                sys_updated_on=stamp, sys_updated_by=user, sys_mod_count=str(int(record.get("sys_mod_count", "0")) + 1)
            )
            return self._written(table, record, journal, user, stamp, request, 200)

    def delete(self, request: Request) -> Response:
        table, problem = self._table(request)
        if problem:
            return problem
        assert request.match is not None
        with self._lock:
            if self.records.get(table, {}).pop(request.match.group("sys_id"), None) is None:
                return _no_record()
            self.writes += 1
        return Response.empty(204)

    # ------------------------------------------------------------------ helpers

    def _written(
        self,
        table: str,
        record: dict[str, Any],
        journal: list[tuple[str, str]],
        user: str,
        stamp: str,
        request: Request,
        status: int,
    ) -> Response:
        """The answer to a create or update (under the lock): the journal entries and the write
        count recorded, then the record (none with ``X-no-response-body: true``), or a scripted
        500 although the write is done."""
        self._journal(record["sys_id"], table, journal, user, stamp)
        self.writes += 1
        if self._fail_after_write > 0:
            self._fail_after_write -= 1
            return error(500, "Internal Server Error", "Transaction cancelled: maximum execution time exceeded")
        if request.header("x-no-response-body").lower() == "true":
            return Response.empty(status)
        return Response.json({"result": self._render(table, dict(record), request)}, status)

    def _dot_walk(self, record: dict[str, Any], path: str) -> str:
        """``assigned_to.email``: a column of the record a reference column points to ('' if none)."""
        column, _, rest = path.partition(".")
        target = REFERENCES.get(column)
        value = record.get(column)
        if not target or not isinstance(value, str) or not value:
            return ""
        with self._lock:
            referenced = self.records.get(target, {}).get(value)
            referenced = dict(referenced) if referenced else None
        if referenced is None:
            return ""
        return self._dot_walk(referenced, rest) if "." in rest else str(referenced.get(rest, ""))

    def _columns(self, table: str) -> set[str] | None:
        known = self.columns.get(table)
        if known is None:
            return None
        return known | {"sys_id", "number", "sys_created_on", "sys_updated_on", "sys_created_by", "sys_updated_by"}

    def _write_request(self, request: Request) -> tuple[str, dict[str, Any], Response | None]:
        """The table and JSON body of a create or update, or the answer refusing the request."""
        table, problem = self._table(request)
        if problem:
            return table, {}, problem
        body, problem = self._body(request)
        return table, body, problem

    def _body(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        content_type = request.header("content-type").split(";")[0].strip().lower()
        if content_type not in ("application/json", ""):
            return {}, error(415, "Unsupported Media Type", f"Content type {content_type} is not supported")
        try:
            body = orjson.loads(request.body or b"{}")
        except orjson.JSONDecodeError:
            return {}, error(400, "Exception while reading request", "The payload is not valid JSON.")
        if not isinstance(body, dict):
            return {}, error(400, "Exception while reading request", "The payload is not a JSON object.")
        return body, None

    def _apply(self, table: str, record: dict[str, Any], body: dict[str, Any]) -> list[tuple[str, str]]:
        """Write ``body`` into ``record`` (strings; sys_* fields ignored); return journal entries."""
        journal: list[tuple[str, str]] = []
        columns = self._columns(table)
        for name, value in body.items():
            if not re.fullmatch(r"[a-z0-9_]+", name) or name.startswith("sys_"):
                continue
            if columns is not None and name not in columns and name not in JOURNAL_FIELDS:
                continue  # an unknown column is silently ignored
            text = _text(value)
            if name in JOURNAL_FIELDS:
                if text:
                    journal.append((name, text))
                record[name] = ""
                continue
            record[name] = text
        if table in INACTIVE_STATES and "state" in body:
            record["active"] = "false" if record.get("state") in INACTIVE_STATES[table] else "true"
        if table == "incident":
            record["priority"] = PRIORITY.get((record.get("impact", "3"), record.get("urgency", "3")), "5")
        return journal

    def _journal(self, sys_id: str, table: str, entries: list[tuple[str, str]], user: str, stamp: str) -> None:
        rows = self.records.setdefault(JOURNAL_TABLE, {})
        for element, value in entries:
            jid = uuid.uuid4().hex
            rows[jid] = {
                "sys_id": jid,
                "element_id": sys_id,
                "name": table,
                "element": element,
                "value": value,
                "sys_created_on": stamp,
                "sys_created_by": user,
            }

    def _render(self, table: str, record: dict[str, Any], request: Request) -> dict[str, Any]:
        fields = [f.strip() for f in request.query.get("sysparm_fields", "").split(",") if f.strip()]
        if fields:
            walked = {f: self._dot_walk(record, f) for f in fields if "." in f}
            record = {f: walked[f] if f in walked else record[f] for f in fields if f in record or f in walked}
        if request.query.get("sysparm_exclude_reference_link", "").lower() != "true":
            for name, target in REFERENCES.items():
                value = record.get(name)
                if isinstance(value, str) and value:
                    link = f"{self.base_url}/api/now/table/{target}/{value}"
                    record = {**record, name: {"link": link, "value": value}}
        mode = request.query.get("sysparm_display_value", "false").lower()
        labels = DISPLAY.get(table, {})
        if mode == "true":
            return {k: labels.get(k, {}).get(v, v) for k, v in record.items()}
        if mode == "all":
            return {k: {"display_value": labels.get(k, {}).get(v, v), "value": v} for k, v in record.items()}
        return record


def _no_record() -> Response:
    return error(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict) and "value" in value:
        return _text(value["value"])
    return orjson.dumps(value).decode()
