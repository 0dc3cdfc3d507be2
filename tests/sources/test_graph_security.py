"""graph_security source against a scripted Graph API."""

from __future__ import annotations

import copy
import datetime as dt

import httpx
import pytest

from forwarder.errors import FatalError
from forwarder.schema import parse_time
from sources.graph_security import GraphSecuritySettings, GraphSecuritySource
from tests.sources import records as R
from tests.sources.fakes import GRAPH, Context, FakeTokens, Recorder, auth, drain, error, http_date, json_response, q

NOW = dt.datetime(2026, 11, 23, 12, 0, 0, tzinfo=dt.UTC)


def alert(i: int, updated: dt.datetime, dlp: bool = True, incident: str = "") -> dict:
    a = copy.deepcopy(R.DLP_ALERT if dlp else R.NON_DLP_ALERT)
    a["id"] = f"a{i}"
    a["lastUpdateDateTime"] = updated.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    a["incidentId"] = incident or f"inc{i}"
    return a


class FakeGraph:
    """alerts_v2 and incidents with $filter on lastUpdateDateTime (ge/lt), $top paging via nextLink."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self.alerts: list[dict] = []
        self.incidents: list[dict] = []
        self.expand_fails = False
        self.filters: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["Prefer"] == "include-unknown-enum-members"
        params = q(request)
        path = request.url.path
        headers = {"Date": http_date(self.now)}
        if path.endswith("/security/alerts_v2"):
            items = self.alerts
        elif path.endswith("/security/incidents"):
            if self.expand_fails and params.get("$expand"):
                return error(500, "InternalServerError", headers=headers)
            items = self.incidents
        else:
            return error(404, "NotFound")
        flt = params.get("$filter", "")
        self.filters.append(flt)
        if "serviceSource eq 'dataLossPrevention'" in flt:
            items = [i for i in items if i["serviceSource"] == "dataLossPrevention"]
        ge = flt.split("lastUpdateDateTime ge ")[1].split(" ")[0] if "ge " in flt else None
        lt = flt.split("lastUpdateDateTime lt ")[1].split(" ")[0].rstrip(")") if "lt " in flt else None
        if ge:
            items = [i for i in items if parse_time(i["lastUpdateDateTime"]) >= parse_time(ge)]
        if lt:
            items = [i for i in items if parse_time(i["lastUpdateDateTime"]) < parse_time(lt)]
        top = int(params.get("$top", "100"))
        skip = int(params.get("$skip", "0"))
        page = items[skip : skip + top]
        if params.get("$expand") != "alerts":
            page = [{k: v for k, v in i.items() if k != "alerts"} for i in page]
        body: dict = {"value": page}
        if skip + top < len(items):
            body["@odata.nextLink"] = str(request.url.copy_set_param("$skip", str(skip + top)))
        return json_response(body, headers=headers)


def make(graph, recorder=None, **settings):
    ctx = Context("graph")
    sleeps: list[float] = []
    s = GraphSecuritySettings(
        auth=auth(), requests_per_minute=0, graph_url=GRAPH, alert_page_size=2, incident_page_size=2, **settings
    )
    src = GraphSecuritySource(
        "graph",
        s,
        ctx,
        transport=httpx.MockTransport(recorder or Recorder(graph)),
        tokens=FakeTokens(),
        sleep=sleeps.append,
    )
    return src, ctx, sleeps


def test_alerts_paged_filtered_and_incremental_with_overlap_dedup():
    g = FakeGraph(NOW)
    g.alerts = [alert(i, NOW - dt.timedelta(hours=5 - i)) for i in range(5)]
    g.alerts.append(alert(99, NOW - dt.timedelta(hours=2), dlp=False))
    src, ctx, _ = make(g, incidents=False)
    records, cursor = drain(src.poll(None), ctx)
    assert sorted(r.data["id"] for r in records) == [f"a{i}" for i in range(5)]
    assert all(r.kind == "graph_alert" for r in records)
    assert "serviceSource eq 'dataLossPrevention'" in g.filters[-1]
    assert cursor["alerts"]["since"] == "2026-11-23T12:00:00Z"
    # An alert updated (status change) after the cursor flows as a new version...
    g.now = NOW + dt.timedelta(minutes=30)
    changed = alert(0, NOW + dt.timedelta(minutes=10))
    changed["status"] = "resolved"
    g.alerts[0] = changed
    # ...and one updated just before the cursor but indexed late is caught by the overlap.
    g.alerts.append(alert(7, NOW - dt.timedelta(minutes=3)))
    records2, cursor2 = drain(src.poll(cursor), ctx)
    assert sorted(r.data["id"] for r in records2) == ["a0", "a7"]
    assert cursor2["alerts"]["since"] == "2026-11-23T12:30:00Z"
    # Nothing new: nothing re-read, however often we poll (no 287 copies).
    for _ in range(3):
        again, cursor2 = drain(src.poll(cursor2), ctx)
        assert again == []


def test_incidents_kept_when_they_hold_dlp_alerts_with_expand_fallback():
    g = FakeGraph(NOW)
    g.alerts = [alert(1, NOW - dt.timedelta(hours=1), incident="2972395")]
    dlp_incident = copy.deepcopy(R.INCIDENT)
    dlp_incident["lastUpdateDateTime"] = (NOW - dt.timedelta(minutes=50)).isoformat()
    other = copy.deepcopy(R.INCIDENT)
    other.update(
        id="5", alerts=[alert(5, NOW, dlp=False)], lastUpdateDateTime=(NOW - dt.timedelta(minutes=40)).isoformat()
    )
    g.incidents = [dlp_incident, other]
    src, ctx, _ = make(g)
    records, cursor = drain(src.poll(None), ctx)
    assert [r.data["id"] for r in records if r.kind == "graph_incident"] == ["2972395"]
    assert cursor["dlp_incidents"] == ["2972395"]
    # The service fails $expand: read without it, keep the incidents known from DLP alerts.
    g.expand_fails = True
    src2, ctx2, _ = make(g, max_retry_wait=1)
    records2, _ = drain(src2.poll(None), ctx2)
    assert [r.data["id"] for r in records2 if r.kind == "graph_incident"] == ["2972395"]


def test_retry_after_is_honoured():
    g = FakeGraph(NOW)
    g.alerts = [alert(1, NOW - dt.timedelta(hours=1))]
    state = {"n": 0}

    def handler(request):
        state["n"] += 1
        if state["n"] <= 2:
            return error(429, "TooManyRequests", headers={"Retry-After": "7"})
        if state["n"] == 3:
            return error(504, "GatewayTimeout")
        return g(request)

    src, ctx, sleeps = make(g, recorder=Recorder(handler), incidents=False)
    records, _ = drain(src.poll(None), ctx)
    assert len(records) == 1 and sleeps[:2] == [7.0, 7.0] and len(sleeps) == 3


def test_next_link_to_another_host_is_refused_without_sending_the_token():
    g = FakeGraph(NOW)
    g.alerts = [alert(i, NOW - dt.timedelta(hours=1)) for i in range(3)]

    def handler(request):
        assert request.url.host == "graph.test", "token sent to a foreign host"
        response = g(request)
        body = response.json()
        if "@odata.nextLink" in body:
            body["@odata.nextLink"] = "https://attacker.example/v1.0/security/alerts_v2?$skip=2"
        return json_response(body)

    src, ctx, _ = make(g, recorder=Recorder(handler), incidents=False)
    with pytest.raises(FatalError, match="refusing to follow"):
        drain(src.poll(None), ctx)


def test_backfill_windows_resume_and_beta():
    g = FakeGraph(NOW)
    g.alerts = [alert(i, NOW - dt.timedelta(days=10 - i)) for i in range(10)]
    recorder = Recorder(g)
    src, ctx, _ = make(g, recorder=recorder, incidents=False, api_version="beta", window_hours=24)
    gen = src.backfill(NOW - dt.timedelta(days=11), NOW, None)
    first, cursor = [], None
    for batch in gen:
        first.extend(batch.records)
        if batch.cursor and len(first) >= 4:
            cursor = batch.cursor
            break
    gen.close()
    rest, _ = drain(src.backfill(NOW - dt.timedelta(days=11), NOW, cursor))
    ids = [r.data["id"] for r in first + rest]
    assert sorted(ids) == sorted(f"a{i}" for i in range(10)) and len(ids) == 10
    assert all("/beta/" in str(r.url) for r in recorder.requests)


def test_health_names_missing_permission():
    def handler(request):
        if "incidents" in request.url.path:
            return error(403, "Forbidden", "Missing role permissions on the request.")
        return json_response({"value": []})

    src, ctx, _ = make(None, recorder=Recorder(handler))
    health = src.health()
    checks = {c.name: c for c in health.checks}
    assert checks["alerts_v2"].ok and not checks["incidents"].ok
    assert "SecurityIncident.Read.All" in checks["incidents"].detail


def test_partial_206_is_asked_again_not_taken_as_complete():
    g = FakeGraph(NOW)
    g.alerts = [alert(1, NOW - dt.timedelta(hours=1)), alert(2, NOW - dt.timedelta(hours=1))]
    state = {"n": 0}

    def handler(request):
        response = g(request)
        if "filter" in str(request.url) and state["n"] == 0:
            state["n"] += 1
            body = response.json()
            body["value"] = body["value"][:1]  # one provider failed: part of the page is missing
            return json_response(body, 206, {"Warning": '199 - "Microsoft/DLP/503/1000"'})
        return response

    src, ctx, sleeps = make(g, recorder=Recorder(handler), incidents=False)
    records, _ = drain(src.poll(None), ctx)
    assert sorted(r.data["id"] for r in records) == ["a1", "a2"] and len(sleeps) == 1


def test_window_unit_counts_listed_fetched_parsed_and_its_records_carry_it():
    """The completeness report read "listed 0, fetched 41, parsed 0" for Graph page windows:
    the window's ledger unit must count what its pages listed, what was fetched (new, kept)
    and parsed, and its records must name that same unit."""
    g = FakeGraph(NOW)
    g.alerts = [alert(i, NOW - dt.timedelta(hours=5 - i)) for i in range(5)]
    g.alerts.append(alert(5, NOW - dt.timedelta(minutes=5)))
    src, ctx, _ = make(g, incidents=False)
    batches = list(src.poll(None))
    units = {u.id: u for b in batches for u in b.units}
    records = [r for b in batches for r in b.records]
    assert len(records) == 6
    assert {r.unit for r in records} <= set(units)
    by_unit = {uid: [r for r in records if r.unit == uid] for uid in units}
    for uid, unit in units.items():
        assert unit.kind == "graph_alerts_window" and unit.status == "fetched"
        assert unit.listed == unit.fetched == unit.parsed == len(by_unit[uid])
    assert sum(u.listed for u in units.values()) == 6
    cursor = [b.cursor for b in batches if b.cursor is not None][-1]
    # Next poll: a5 is re-listed by the overlap and skipped (listed, not fetched); a7 is new.
    g.now = NOW + dt.timedelta(minutes=30)
    g.alerts.append(alert(7, NOW - dt.timedelta(minutes=3)))
    batches = list(src.poll(cursor))
    units2 = [u for b in batches for u in b.units]
    records2 = [r for b in batches for r in b.records]
    assert [r.data["id"] for r in records2] == ["a7"]
    [unit] = [u for u in units2 if u.listed]
    assert (unit.listed, unit.fetched, unit.parsed) == (2, 1, 1)
    assert records2[0].unit == unit.id
