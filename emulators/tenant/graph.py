"""Microsoft Graph security API: ``alerts_v2`` and ``incidents`` (v1.0 and beta).

Listing supports ``$filter`` (clauses ``<field> <op> <value>`` joined with ``and``; string and
enum fields with ``eq``/``ne``, date fields with ``eq ne gt ge lt le``), ``$top``, ``$skip``,
``$orderby`` (``createdDateTime`` or ``lastUpdateDateTime``, ``asc``/``desc``; default newest
created first), ``$count=true``, ``$expand=alerts`` (incidents) and ``@odata.nextLink`` paging
(keyset ``$skiptoken``, stable under concurrent updates). An unsupported filter or an invalid
enum constant answers 400 like Graph. ``$top`` above the page cap (1000 alerts, 50 incidents)
is served in pages of the cap.

Updates (PATCH) and comments are kept in an in-memory overlay; an updated item gets a new
``lastUpdateDateTime`` (emulated now), so a poller windowing on it sees it again.
"""

from __future__ import annotations

import base64
import datetime as dt
import heapq
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from emulators.httpd import App, Request, Response
from emulators.tenant.config import Clock
from emulators.tenant.generator import Dataset, graph_time
from emulators.tenant.guard import Guard, graph_error
from emulators.tenant.tokens import GRAPH

ALERT_ROLES = ("SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All")
ALERT_WRITE = ("SecurityAlert.ReadWrite.All",)
INCIDENT_ROLES = ("SecurityIncident.Read.All", "SecurityIncident.ReadWrite.All")
INCIDENT_WRITE = ("SecurityIncident.ReadWrite.All",)
GRAPH_AUDIENCES = (GRAPH, "00000003-0000-0000-c000-000000000000")

CLASSIFICATIONS = ("unknown", "falsePositive", "truePositive", "informationalExpectedActivity", "unknownFutureValue")
DETERMINATIONS = (
    "unknown",
    "apt",
    "malware",
    "securityPersonnel",
    "securityTesting",
    "unwantedSoftware",
    "other",
    "multiStagedAttack",
    "compromisedUser",
    "compromisedAccount",
    "phishing",
    "maliciousUserActivity",
    "clean",
    "notMalicious",
    "insufficientData",
    "notEnoughDataToValidate",
    "confirmedUserActivity",
    "confirmedActivity",
    "lineOfBusinessApplication",
    "unknownFutureValue",
)
ENUMS: dict[str, tuple[str, ...]] = {
    "severity": ("unknown", "informational", "low", "medium", "high", "unknownFutureValue"),
    "classification": CLASSIFICATIONS,
    "determination": DETERMINATIONS,
    "serviceSource": (
        "unknown",
        "microsoftDefenderForEndpoint",
        "microsoftDefenderForIdentity",
        "microsoftDefenderForCloudApps",
        "microsoftDefenderForOffice365",
        "microsoft365Defender",
        "azureAdIdentityProtection",
        "microsoftAppGovernance",
        "dataLossPrevention",
        "unknownFutureValue",
        "microsoftDefenderForCloud",
        "microsoftSentinel",
        "microsoftInsiderRiskManagement",
    ),
}
#: Evolvable enum members (listed after unknownFutureValue): served as themselves only when the
#: request says ``Prefer: include-unknown-enum-members``, else as ``unknownFutureValue``.
EVOLVABLE: dict[str, frozenset[str]] = {
    "serviceSource": frozenset(
        (
            "microsoftDefenderForCloud",
            "microsoftSentinel",
            "microsoftInsiderRiskManagement",
            "microsoftThreatIntelligence",
        )
    ),
    "detectionSource": frozenset(
        (
            "microsoftDefenderForCloud",
            "microsoftDefenderForIoT",
            "microsoftDefenderForServers",
            "microsoftDefenderForStorage",
            "microsoftDefenderForDNS",
            "microsoftDefenderForDatabases",
            "microsoftDefenderForContainers",
            "microsoftDefenderForNetwork",
            "microsoftDefenderForAppService",
            "microsoftDefenderForKeyVault",
            "microsoftDefenderForResourceManager",
            "microsoftDefenderForApiManagement",
        )
    ),
    "status": frozenset(("awaitingAction",)),
}


def wants_evolvable(request: Request) -> bool:
    return any(p.strip().lower() == "include-unknown-enum-members" for p in request.header("prefer").split(","))


def present(request: Request, item: dict[str, Any]) -> dict[str, Any]:
    """``item`` as this request sees it: a copy with evolvable enum members replaced by
    ``unknownFutureValue`` (also in expanded alerts) unless the request opted in."""
    if wants_evolvable(request):
        return item
    out = dict(item)
    for name, members in EVOLVABLE.items():
        if out.get(name) in members:
            out[name] = "unknownFutureValue"
    if isinstance(out.get("alerts"), list):
        out["alerts"] = [present(request, a) for a in out["alerts"]]
    return out


ALERT_STATUS = ("unknown", "new", "inProgress", "resolved", "unknownFutureValue")
INCIDENT_STATUS = ("active", "resolved", "inProgress", "redirected", "unknownFutureValue", "awaitingAction")

#: Properties a PATCH may set: the values allowed, or None for any value.
ALERT_PATCHABLE: dict[str, tuple[str, ...] | None] = {
    "status": ALERT_STATUS,
    "classification": CLASSIFICATIONS,
    "determination": DETERMINATIONS,
    "assignedTo": None,
}
INCIDENT_PATCHABLE: dict[str, tuple[str, ...] | None] = {
    "status": ("active", "resolved", "inProgress", "redirected"),
    "classification": CLASSIFICATIONS,
    "determination": DETERMINATIONS,
    "assignedTo": None,
    "customTags": None,
    "description": None,
    "resolvingComment": None,
    "summary": None,
}
TIME_FIELDS = ("createdDateTime", "lastUpdateDateTime")
_CLAUSE = re.compile(r"^\s*(\w+)\s+(eq|ne|gt|ge|lt|le)\s+(.+?)\s*$", re.IGNORECASE)


class BadQuery(Exception):
    """A query option Graph would reject with 400."""


def parse_time(text: str) -> float:
    value = text.strip().strip("'")
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    m = re.match(r"^(.*?\.\d{6})\d+(.*)$", value)  # Python takes at most 6 fractional digits
    if m:
        value = m.group(1) + m.group(2)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadQuery(
            f"The DateTimeOffset text '{text}' should be in format 'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?'"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


@dataclass
class Clause:
    field: str
    op: str
    value: Any  # float for time fields, str otherwise

    def test(self, item_value: Any) -> bool:
        v = item_value
        if self.field in TIME_FIELDS:
            v = parse_time(item_value) if isinstance(item_value, str) else float("nan")
        if v is None:
            return self.op == "ne"
        if self.op == "eq":
            return bool(v == self.value)
        if self.op == "ne":
            return bool(v != self.value)
        return bool({"gt": v > self.value, "ge": v >= self.value, "lt": v < self.value, "le": v <= self.value}[self.op])


def _split_top(text: str, word: str) -> list[str]:
    """Split ``text`` on `` <word> `` outside quotes and parentheses."""
    parts, depth, quoted, start, i = [], 0, False, 0, 0
    token = f" {word} "
    lower = text.lower()
    while i < len(text):
        ch = text[i]
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth < 0:
                raise BadQuery(f"Invalid filter clause: unbalanced parentheses in '{text}'.")
        elif not quoted and depth == 0 and lower.startswith(token, i):
            parts.append(text[start:i])
            i += len(token)
            start = i
            continue
        i += 1
    if depth != 0 or quoted:
        raise BadQuery(f"Invalid filter clause: unbalanced parentheses or quotes in '{text}'.")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _strip_parens(text: str) -> str:
    """Remove parentheses that enclose the whole of ``text``."""
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(text) - 1:
                return text  # the first "(" closes before the end: "(a) and (b)"
        text = text[1:-1].strip()
    return text


def parse_filter(
    text: str, fields: tuple[str, ...], type_name: str, status_values: tuple[str, ...]
) -> list[list[Clause]]:
    """Parse ``$filter`` into a conjunction of disjunctions (``a and (b or c)``).

    Raise :class:`BadQuery` for anything Graph would refuse: unknown properties, functions
    (``contains(...)``, ``startswith(...)``), ``not``, invalid enum constants.
    """
    if not text.strip():
        return []
    groups: list[list[Clause]] = []
    for term in _split_top(_strip_parens(text.strip()), "and"):
        term = _strip_parens(term)
        alternatives = _split_top(term, "or")
        group = []
        for alt in alternatives:
            alt = _strip_parens(alt)
            if "(" in alt.split("'")[0] or re.match(r"^\s*not\s", alt, re.IGNORECASE):
                raise BadQuery(
                    f"Invalid filter clause: the query '{text}' uses a function or operator that is not supported."
                )
            if len(_split_top(alt, "and")) > 1:
                raise BadQuery(f"Invalid filter clause: nested 'and' inside 'or' is not supported in '{text}'.")
            group.append(_parse_clause(alt, fields, type_name, status_values))
        groups.append(group)
    return groups


def _parse_clause(part: str, fields: tuple[str, ...], type_name: str, status_values: tuple[str, ...]) -> Clause:
    m = _CLAUSE.match(part)
    if not m:
        raise BadQuery(f"Invalid filter clause: syntax error in '{part}'.")
    field, op, raw = m.group(1), m.group(2).lower(), m.group(3)
    canonical = next((f for f in fields if f.lower() == field.lower()), None)
    if canonical is None:
        raise BadQuery(f"Invalid filter clause: Could not find a property named '{field}' on type '{type_name}'.")
    if canonical in TIME_FIELDS:
        return Clause(canonical, op, parse_time(raw))
    if op not in ("eq", "ne"):
        raise BadQuery(f"Invalid filter clause: operator '{op}' is not supported for '{canonical}'.")
    if not (raw.startswith("'") and raw.endswith("'")) and raw.lower() != "null":
        raise BadQuery(f"Invalid filter clause: '{raw}' is not a valid literal for '{canonical}'.")
    value = None if raw.lower() == "null" else raw[1:-1].replace("''", "'")
    allowed = status_values if canonical == "status" else ENUMS.get(canonical)
    if allowed is not None and value is not None and value not in allowed:
        raise BadQuery(f"The string '{value}' is not a valid enumeration type constant for '{canonical}'.")
    return Clause(canonical, op, value)


class Collection:
    """A generated, time-ordered collection (alerts or incidents) with an update overlay.

    Base items ``0..count-1`` have ``createdDateTime`` and ``lastUpdateDateTime`` strictly
    increasing with the index, so time filters become index ranges; updated items leave the
    base order and live in the overlay with their new times.
    """

    def __init__(
        self,
        count: Callable[[], int],
        times: Callable[[int], tuple[float, float]],
        make: Callable[[int], dict[str, Any]],
        ident: Callable[[int], str],
    ) -> None:
        self._count = count
        self.times = times
        self.make = make
        self.ident = ident
        self.overlay: dict[int, dict[str, Any]] = {}
        self._overlay_sorted: list[tuple[float, float, str, int]] | None = None
        self.lock = threading.RLock()

    @property
    def count(self) -> int:
        """Items that exist now (later ones have not happened yet)."""
        return self._count()

    def get(self, index: int) -> dict[str, Any]:
        with self.lock:
            item = self.overlay.get(index)
        return orjson.loads(orjson.dumps(item)) if item is not None else self.make(index)

    def put(self, index: int, item: dict[str, Any]) -> None:
        with self.lock:
            self.overlay[index] = item
            self._overlay_sorted = None

    def _overlay(self) -> list[tuple[float, float, str, int]]:
        with self.lock:
            if self._overlay_sorted is None:
                self._overlay_sorted = sorted(
                    (parse_time(v["createdDateTime"]), parse_time(v["lastUpdateDateTime"]), v["id"], k)
                    for k, v in self.overlay.items()
                )
            return list(self._overlay_sorted)

    def _bound(self, which: int, value: float, count: int) -> int:
        """First base index (below ``count``) whose time ``which`` (0 created, 1 updated) is >= value."""
        lo, hi = 0, count
        while lo < hi:
            mid = (lo + hi) // 2
            if self.times(mid)[which] < value:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def iterate(
        self, clauses: list[list[Clause]], order_field: str, descending: bool, after: tuple[float, str] | None
    ) -> Iterator[dict[str, Any]]:
        """Items matching ``clauses`` in order, starting strictly after the keyset ``after``."""
        which = 0 if order_field == "createdDateTime" else 1
        count = self.count
        lo, hi = 0, count
        for group in clauses:
            if len(group) != 1 or group[0].field not in TIME_FIELDS:
                continue
            c = group[0]
            w = 0 if c.field == "createdDateTime" else 1
            # gt/le bound on the next float above the value: "first time > value"
            edge = math.nextafter(c.value, math.inf) if c.op in ("gt", "le") else c.value
            if c.op in ("gt", "ge", "eq"):
                lo = max(lo, self._bound(w, edge if c.op != "eq" else c.value, count))
            if c.op in ("lt", "le", "eq"):
                hi = min(hi, self._bound(w, edge if c.op != "eq" else math.nextafter(c.value, math.inf), count))
        if after is not None:
            # keyset: continue from the last key seen (ties are broken by id, checked below)
            b = self._bound(which, after[0], count)
            if descending:
                hi = min(hi, b + 1)
            else:
                lo = max(lo, b - 1 if b > 0 else 0)
        overlay = self._overlay()
        overlay_ids = {k for _, _, _, k in overlay}

        def base() -> Iterator[tuple[tuple[float, str], int, dict[str, Any] | None]]:
            rng = range(hi - 1, lo - 1, -1) if descending else range(lo, hi)
            for j in rng:
                if j in overlay_ids:
                    continue
                key = (self.times(j)[which], self.ident(j))
                yield key, j, None

        def extra() -> Iterator[tuple[tuple[float, str], int, dict[str, Any] | None]]:
            items = sorted(overlay, key=lambda o: (o[which], o[2]), reverse=descending)
            for o in items:
                yield (float(o[which]), o[2]), o[3], None

        merged = heapq.merge(base(), extra(), key=lambda x: x[0], reverse=descending)
        for key, j, _ in merged:
            if after is not None:
                if descending and key >= after:
                    continue
                if not descending and key <= after:
                    continue
            item = self.get(j)
            if all(any(c.test(item.get(c.field)) for c in group) for group in clauses):
                yield item


def _token_encode(key: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([key[0], key[1]])).decode().rstrip("=")


def _token_decode(token: str) -> tuple[float, str]:
    try:
        value = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return float(value[0]), str(value[1])
    except (ValueError, TypeError, IndexError, orjson.JSONDecodeError):
        raise BadQuery("The $skiptoken value is invalid.") from None


class GraphSecurity:
    """Routes and state of ``/security/alerts_v2`` and ``/security/incidents``."""

    def __init__(self, data: Dataset, guard: Guard, clock: Clock) -> None:
        self.data = data
        self.guard = guard
        self.clock = clock
        self.alerts = Collection(lambda: data.alerts_until(clock.time()), data.alert_times, data.alert, data.alert_id)
        self.incidents = Collection(
            lambda: data.incidents_until(clock.time()), data.incident_times, data.incident, data.incident_id
        )
        self.partial_responses = 0
        self._app: App | None = None

    def install(self, app: App) -> None:
        self._app = app
        v = r"/(?P<version>v1\.0|beta)/security"
        app.route("GET", v + r"/alerts_v2", self.list_alerts)
        app.route("GET", v + r"/alerts_v2/(?P<id>[^/]+)", self.get_alert)
        app.route("PATCH", v + r"/alerts_v2/(?P<id>[^/]+)", self.patch_alert)
        app.route("POST", v + r"/alerts_v2/(?P<id>[^/]+)/comments", self.comment_alert)
        app.route("GET", v + r"/incidents", self.list_incidents)
        app.route("GET", v + r"/incidents/(?P<id>[^/]+)", self.get_incident)
        app.route("PATCH", v + r"/incidents/(?P<id>[^/]+)", self.patch_incident)
        app.route("POST", v + r"/incidents/(?P<id>[^/]+)/comments", self.comment_incident)

    # ------------------------------------------------------------------ helpers
    def _incident_index(self, ident: str) -> int | None:
        if not ident.isdigit():
            return None
        m = int(ident) - 2000
        return m if 0 <= m < self.incidents.count else None

    def _context(self, request: Request, entity: str) -> str:
        assert request.match is not None
        return f"https://graph.microsoft.com/{request.match.group('version')}/$metadata#security/{entity}"

    def _list(
        self,
        request: Request,
        coll: Collection,
        entity: str,
        type_name: str,
        fields: tuple[str, ...],
        status_values: tuple[str, ...],
        default_top: int,
        max_top: int,
        expand: Callable[[dict[str, Any]], None] | None = None,
    ) -> Response:
        q = request.query
        try:
            known = {"$filter", "$top", "$skip", "$orderby", "$count", "$skiptoken", "$expand", "$select"}
            for name in q:
                if name.startswith("$") and name not in known:
                    raise BadQuery(f"Query option '{name}' is not allowed.")
            clauses = parse_filter(q.get("$filter", ""), fields, type_name, status_values)
            top = _int_option(q, "$top", default_top)
            skip = _int_option(q, "$skip", 0)
            order = q.get("$orderby", "").strip()
            order_field, descending = "createdDateTime", True
            if order:
                parts = order.split()
                if (
                    parts[0] not in TIME_FIELDS
                    or len(parts) > 2
                    or (len(parts) == 2 and parts[1] not in ("asc", "desc"))
                ):
                    raise BadQuery(f"The $orderby '{order}' is not supported.")
                order_field, descending = parts[0], len(parts) == 2 and parts[1] == "desc"
            expand_value = q.get("$expand", "")
            if expand_value and (expand is None or expand_value != "alerts"):
                raise BadQuery(f"Could not find a property named '{expand_value}' to expand.")
            after = _token_decode(q["$skiptoken"]) if "$skiptoken" in q else None
        except BadQuery as exc:
            return graph_error(400, "BadRequest", str(exc), request)
        if expand_value and clauses and self.guard.roll(self.guard.faults.expand_failure_rate):
            self.guard.injected["graph_expand_500"] += 1
            return graph_error(500, "UnknownError", "An error has occurred while expanding alerts.", request)
        page_size = min(top, max_top)
        items: list[dict[str, Any]] = []
        more = False
        skipped = 0
        for item in coll.iterate(clauses, order_field, descending, after):
            if skipped < skip and after is None:
                skipped += 1
                continue
            if len(items) == page_size:
                more = True
                break
            items.append(item)
        if expand_value:
            for item in items:
                assert expand is not None
                expand(item)
        body: dict[str, Any] = {"@odata.context": self._context(request, entity)}
        if q.get("$count", "").lower() == "true":
            body["@odata.count"] = sum(1 for _ in coll.iterate(clauses, order_field, descending, None))
        body["value"] = [present(request, item) for item in items]
        if more and items:
            last = items[-1]
            key = (parse_time(last[order_field]), last["id"])
            params = {k: v for k, v in q.items() if k not in ("$skiptoken", "$skip", "$count")}
            params["$skiptoken"] = _token_encode(key)
            assert self._app is not None
            body["@odata.nextLink"] = f"{self._app.base_url}{request.path}?" + urlencode(
                params, quote_via=quote, safe="$',:"
            )
        status, headers = 200, {}
        if self.guard.roll(self.guard.faults.partial_rate):
            self.partial_responses += 1
            status = 206
            headers["Warning"] = '199 - "Microsoft/DataLossPrevention/504/10000"'
        return Response.json(body, status, headers)

    # ------------------------------------------------------------------ alerts
    def list_alerts(self, request: Request) -> Response:
        return self.guard.graph(
            request,
            GRAPH_AUDIENCES,
            ALERT_ROLES,
            lambda: self._list(
                request,
                self.alerts,
                "alerts_v2",
                "microsoft.graph.security.alert",
                (
                    "assignedTo",
                    "classification",
                    "determination",
                    "createdDateTime",
                    "lastUpdateDateTime",
                    "severity",
                    "serviceSource",
                    "status",
                ),
                ALERT_STATUS,
                100,
                1000,
            ),
        )

    def _alert_index(self, request: Request) -> int | None:
        assert request.match is not None
        j = self.data.alert_index_of(request.match.group("id"))
        return j if j is not None and j < self.alerts.count else None

    def get_alert(self, request: Request) -> Response:
        return self._one_alert(request, ALERT_ROLES, lambda j: self._entity(request, "alerts_v2", self.alerts.get(j)))

    def patch_alert(self, request: Request) -> Response:
        def patch(j: int) -> Response:
            return self._touching_incident(j, self._patch(request, self.alerts, j, ALERT_PATCHABLE, "alerts_v2"))

        return self._one_alert(request, ALERT_WRITE, patch)

    def comment_alert(self, request: Request) -> Response:
        def comment(j: int) -> Response:
            return self._touching_incident(j, self._comment(request, self.alerts, j))

        return self._one_alert(request, ALERT_WRITE, comment)

    def _one_alert(self, request: Request, roles: tuple[str, ...], action: Callable[[int], Response]) -> Response:
        """``action(index)`` on the alert the path names, for a token with one of ``roles`` (404 if none)."""

        def run() -> Response:
            j = self._alert_index(request)
            return _not_found(request, "alert") if j is None else action(j)

        return self.guard.graph(request, GRAPH_AUDIENCES, roles, run)

    def _touching_incident(self, j: int, response: Response) -> Response:
        """An alert changed (``response`` 200): its incident's lastUpdateDateTime moves to now."""
        if response.status == 200:
            self._touch_incident(j)
        return response

    def _entity(self, request: Request, entity_set: str, item: dict[str, Any]) -> Response:
        return Response.json(
            {"@odata.context": self._context(request, f"{entity_set}/$entity"), **present(request, item)}
        )

    def _patch(
        self,
        request: Request,
        coll: Collection,
        index: int,
        allowed: dict[str, tuple[str, ...] | None],
        entity_set: str,
    ) -> Response:
        """Apply a PATCH of the ``allowed`` properties (value lists, or None: any value); now is the
        item's lastUpdateDateTime, and an alert's resolvedDateTime when it is resolved."""
        problem, changes = _patch_body(request, allowed)
        if problem:
            return graph_error(400, "BadRequest", problem, request)
        with coll.lock:
            item = coll.get(index)
            item.update(changes)
            now = graph_time(self.clock.time())
            item["lastUpdateDateTime"] = now
            if coll is self.alerts and changes.get("status") == "resolved":
                item["resolvedDateTime"] = now
            coll.put(index, item)
        return self._entity(request, entity_set, item)

    def _comment(self, request: Request, coll: Collection, index: int) -> Response:
        try:
            body = request.json()
        except orjson.JSONDecodeError:
            return graph_error(400, "BadRequest", "The request body is not valid JSON.", request)
        text = body.get("comment") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text:
            return graph_error(400, "BadRequest", "The 'comment' property is required.", request)
        with coll.lock:
            item = coll.get(index)
            now = graph_time(self.clock.time())
            item["comments"].append(
                {
                    "@odata.type": "microsoft.graph.security.alertComment",
                    "comment": text,
                    "createdByDisplayName": "Automation",
                    "createdDateTime": now,
                }
            )
            item["lastUpdateDateTime"] = now
            coll.put(index, item)
        return Response.json(
            {
                "@odata.context": self._context(request, "microsoft.graph.security.alertComment"),
                "value": item["comments"],
            }
        )

    # ------------------------------------------------------------------ incidents
    def _touch_incident(self, j: int) -> None:
        """An alert changed: its incident's lastUpdateDateTime moves to now, as in Defender XDR."""
        m = self.data.incident_of_alert(j)
        if m >= self.incidents.count:
            return
        with self.incidents.lock:
            incident = self.incidents.get(m)
            incident["lastUpdateDateTime"] = graph_time(self.clock.time())
            self.incidents.put(m, incident)

    def _expand(self, incident: dict[str, Any]) -> None:
        m = self._incident_index(incident["id"])
        incident["alerts"] = [self.alerts.get(j) for j in self.data.incident_alerts(m)] if m is not None else []

    def list_incidents(self, request: Request) -> Response:
        return self.guard.graph(
            request,
            GRAPH_AUDIENCES,
            INCIDENT_ROLES,
            lambda: self._list(
                request,
                self.incidents,
                "incidents",
                "microsoft.graph.security.incident",
                (
                    "assignedTo",
                    "classification",
                    "determination",
                    "createdDateTime",
                    "lastUpdateDateTime",
                    "severity",
                    "status",
                ),
                INCIDENT_STATUS,
                50,
                50,
                self._expand,
            ),
        )

    def get_incident(self, request: Request) -> Response:
        def get(m: int) -> Response:
            item = self.incidents.get(m)
            if request.query.get("$expand") == "alerts":
                self._expand(item)
            return self._entity(request, "incidents", item)

        return self._one_incident(request, INCIDENT_ROLES, get)

    def patch_incident(self, request: Request) -> Response:
        return self._one_incident(
            request, INCIDENT_WRITE, lambda m: self._patch(request, self.incidents, m, INCIDENT_PATCHABLE, "incidents")
        )

    def comment_incident(self, request: Request) -> Response:
        return self._one_incident(request, INCIDENT_WRITE, lambda m: self._comment(request, self.incidents, m))

    def _one_incident(self, request: Request, roles: tuple[str, ...], action: Callable[[int], Response]) -> Response:
        """``action(index)`` on the incident the path names, for a token with one of ``roles`` (404 if none)."""

        def run() -> Response:
            assert request.match is not None
            m = self._incident_index(request.match.group("id"))
            return _not_found(request, "incident") if m is None else action(m)

        return self.guard.graph(request, GRAPH_AUDIENCES, roles, run)


def _int_option(q: dict[str, str], name: str, default: int) -> int:
    if name not in q:
        return default
    try:
        value = int(q[name])
    except ValueError:
        raise BadQuery(f"Invalid value '{q[name]}' for query option '{name}'.") from None
    if value < 0:
        raise BadQuery(f"Invalid value '{q[name]}' for query option '{name}'.")
    return value


def _not_found(request: Request, what: str) -> Response:
    assert request.match is not None
    return graph_error(404, "NotFound", f"The {what} '{request.match.group('id')}' was not found.", request)


def _patch_body(request: Request, allowed: dict[str, tuple[str, ...] | None]) -> tuple[str, dict[str, Any]]:
    if "application/json" not in request.header("content-type").lower():
        return "Content-Type must be application/json.", {}
    try:
        body = request.json()
    except orjson.JSONDecodeError:
        return "The request body is not valid JSON.", {}
    if not isinstance(body, dict):
        return "The request body must be a JSON object.", {}
    changes: dict[str, Any] = {}
    for key, value in body.items():
        if key.startswith("@odata"):
            continue
        if key not in allowed:
            return f"The property '{key}' does not exist or cannot be updated.", {}
        values = allowed[key]
        if values is not None and value not in values:
            return f"The value '{value}' is not valid for '{key}'.", {}
        changes[key] = value
    return "", changes
