"""Graph security API emulation: alerts_v2 and incidents, query options, paging, updates, errors."""

from __future__ import annotations

import datetime as dt

from emulators.tenant.generator import graph_time
from emulators.tenant.tokens import GRAPH, MANAGEMENT

from .conftest import serve


def _all(tenant, first, token=None):
    token = token or tenant.token(GRAPH)
    items, url, pages = [], first, 0
    while url:
        r = tenant.graph(url, token)
        assert r.status_code == 200, r.text
        body = r.json()
        items.extend(body["value"])
        url = body.get("@odata.nextLink")
        pages += 1
    return items, pages


def test_alert_paging_returns_every_alert_once(shared):
    items, pages = _all(shared, "alerts_v2?$top=7")
    ids = [a["id"] for a in items]
    assert len(ids) == len(set(ids))
    assert set(ids) == shared.emu.expected_alert_ids()
    assert pages == -(-len(ids) // 7)
    created = [a["createdDateTime"] for a in items]
    assert created == sorted(created, reverse=True)  # newest first by default


def test_alert_shape(shared):
    alert = shared.graph("alerts_v2?$top=1&$filter=serviceSource eq 'dataLossPrevention'").json()["value"][0]
    assert alert["@odata.type"] == "#microsoft.graph.security.alert"
    assert alert["serviceSource"] == "dataLossPrevention"
    assert alert["detectionSource"] == "microsoftDataLossPrevention"
    assert alert["tenantId"] == shared.emu.tenant_id
    assert alert["incidentId"].isdigit()
    assert alert["createdDateTime"].endswith("Z") and len(alert["createdDateTime"].split(".")[1]) == 8
    roles = [e["roles"] for e in alert["evidence"] if e["@odata.type"].endswith("userEvidence")]
    assert roles == [["policyViolator"]]


def test_filter_by_service_source_and_time_window_with_ascending_order(shared):
    everything, _ = _all(shared, "alerts_v2?$top=1000")
    times = sorted(a["lastUpdateDateTime"] for a in everything)
    lo, hi = times[len(times) // 4], times[3 * len(times) // 4]
    flt = f"lastUpdateDateTime ge {lo} and lastUpdateDateTime lt {hi} and (serviceSource eq 'dataLossPrevention')"
    items, _ = _all(shared, f"alerts_v2?$top=5&$orderby=lastUpdateDateTime asc&$filter={flt}")
    expected = {
        a["id"] for a in everything if lo <= a["lastUpdateDateTime"] < hi and a["serviceSource"] == "dataLossPrevention"
    }
    assert {a["id"] for a in items} == expected and expected
    assert [a["lastUpdateDateTime"] for a in items] == sorted(a["lastUpdateDateTime"] for a in items)
    defender = shared.emu.expected_alert_ids("microsoftDefenderForEndpoint")
    got = {a["id"] for a in everything if a["serviceSource"] == "microsoftDefenderForEndpoint"}
    assert got == defender


def test_unsupported_filters_are_400_like_graph(shared):
    token = shared.token(GRAPH)
    for flt in (
        "serviceSource eq 'microsoftDataLossPrevention'",  # not a v1.0 serviceSource member
        "contains(title,'DLP')",
        "detectionSource eq 'microsoftDataLossPrevention'",  # not filterable
        "severity gt 'low'",
    ):
        r = shared.graph("alerts_v2", token, params={"$filter": flt})
        assert r.status_code == 400, flt
        err = r.json()["error"]
        assert err["code"] == "BadRequest" and err["innerError"]["request-id"]
    assert shared.graph("alerts_v2", token, params={"$orderby": "title"}).status_code == 400
    assert shared.graph("alerts_v2", token, params={"$top": "-1"}).status_code == 400


def test_top_is_capped_per_page_and_skip_works(shared):
    token = shared.token(GRAPH)
    body = shared.graph("incidents", token, params={"$top": "500"}).json()
    assert len(body["value"]) == min(50, len(shared.emu.expected_incident_ids()))
    first = shared.graph("alerts_v2", token, params={"$top": "4"}).json()["value"]
    skipped = shared.graph("alerts_v2", token, params={"$top": "2", "$skip": "2"}).json()["value"]
    assert [a["id"] for a in skipped] == [a["id"] for a in first[2:4]]
    counted = shared.graph("alerts_v2", token, params={"$top": "1", "$count": "true"}).json()
    assert counted["@odata.count"] == len(shared.emu.expected_alert_ids())


def test_incidents_with_expanded_alerts(shared):
    items, _ = _all(shared, "incidents?$expand=alerts&$top=10")
    assert {i["id"] for i in items} == shared.emu.expected_incident_ids()
    alert_ids = {a["id"] for i in items for a in i["alerts"]}
    assert alert_ids == shared.emu.expected_alert_ids()
    for incident in items:
        assert all(a["incidentId"] == incident["id"] for a in incident["alerts"])
    one = shared.graph(f"incidents/{items[0]['id']}?$expand=alerts").json()
    assert one["alerts"] and one["id"] == items[0]["id"]
    assert shared.graph("incidents?$expand=evidence").status_code == 400


def test_patch_alert_and_comment_move_it_into_a_new_window(tenant):
    token = tenant.token(GRAPH)
    alert = tenant.graph("alerts_v2?$top=1", token).json()["value"][0]
    before = tenant.emu.clock.time()
    r = tenant.http.patch(
        f"/v1.0/security/alerts_v2/{alert['id']}",
        headers={"Authorization": f"Bearer {token}"},
        json={"status": "resolved", "classification": "truePositive", "determination": "confirmedUserActivity"},
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["status"] == "resolved" and updated["resolvedDateTime"]
    assert updated["lastUpdateDateTime"] > graph_time(before - 1)
    c = tenant.http.post(
        f"/v1.0/security/alerts_v2/{alert['id']}/comments",
        headers={"Authorization": f"Bearer {token}"},
        json={"@odata.type": "microsoft.graph.security.alertComment", "comment": "handled by dlpfwd"},
    )
    assert c.status_code == 200 and c.json()["value"][-1]["comment"] == "handled by dlpfwd"
    since = dt.datetime.fromtimestamp(before - 1, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent, _ = _all(tenant, f"alerts_v2?$filter=lastUpdateDateTime gt {since}", token)
    assert [a["id"] for a in recent] == [alert["id"]]
    # its incident was updated too, and expands to the updated alert
    incidents, _ = _all(tenant, f"incidents?$expand=alerts&$filter=lastUpdateDateTime gt {since}", token)
    assert [i["id"] for i in incidents] == [alert["incidentId"]]
    assert [a["status"] for a in incidents[0]["alerts"] if a["id"] == alert["id"]] == ["resolved"]
    assert recent[0]["comments"][0]["comment"] == "handled by dlpfwd"
    # read-only properties and bad enum values are refused
    bad = tenant.http.patch(
        f"/v1.0/security/alerts_v2/{alert['id']}", headers={"Authorization": f"Bearer {token}"}, json={"title": "x"}
    )
    assert bad.status_code == 400
    bad = tenant.http.patch(
        f"/v1.0/security/alerts_v2/{alert['id']}", headers={"Authorization": f"Bearer {token}"}, json={"status": "done"}
    )
    assert bad.status_code == 400
    incident = alert["incidentId"]
    r = tenant.http.patch(
        f"/v1.0/security/incidents/{incident}",
        headers={"Authorization": f"Bearer {token}"},
        json={"status": "resolved", "customTags": ["dlpfwd"]},
    )
    assert r.status_code == 200 and r.json()["customTags"] == ["dlpfwd"]
    assert tenant.graph("alerts_v2/nope", token).status_code == 404


def test_token_errors_are_graph_401_and_missing_roles_403(tenant):
    r = tenant.http.get("/v1.0/security/alerts_v2")
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert r.json()["error"]["message"] == "Access token is empty."
    assert "WWW-Authenticate" in r.headers
    r = tenant.graph("alerts_v2", tenant.token(MANAGEMENT))
    assert r.status_code == 401 and "Invalid audience" in r.json()["error"]["message"]
    r = tenant.graph("alerts_v2", "not.a.jwt")
    assert r.status_code == 401
    tenant.emu.set_roles(GRAPH, ["SecurityIncident.Read.All"])
    token = tenant.token(GRAPH)
    r = tenant.graph("alerts_v2", token)
    assert r.status_code == 403 and r.json()["error"]["code"] == "Forbidden"
    assert tenant.graph("incidents", token).status_code == 200
    r = tenant.http.patch(
        "/v1.0/security/incidents/2000", headers={"Authorization": f"Bearer {token}"}, json={"status": "resolved"}
    )
    assert r.status_code == 403


def test_throttling_errors_and_partial_results(tenant):
    token = tenant.token(GRAPH)
    tenant.emu.faults.update(throttle_rate=1.0, retry_after=7)
    r = tenant.graph("alerts_v2", token)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.json()["error"]["code"] == "TooManyRequests"
    tenant.emu.faults.update(throttle_rate=0.0, error_rate=1.0)
    assert tenant.graph("alerts_v2", token).status_code in (500, 503)
    tenant.emu.faults.update(error_rate=0.0, partial_rate=1.0)
    r = tenant.graph("alerts_v2", token)
    assert r.status_code == 206 and r.headers["Warning"].startswith("199 - ")
    assert r.json()["value"]
    tenant.emu.faults.update(partial_rate=0.0, graph_rate_limit=3)
    codes = [tenant.graph("alerts_v2?$top=1", token).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    stats = tenant.emu.stats()
    assert stats["injected"]["graph_429"] == 2 and stats["partial_responses"] == 1


def test_beta_serves_the_same_alerts(shared):
    token = shared.token(GRAPH)
    v1 = shared.graph("alerts_v2?$top=3", token).json()["value"]
    beta = shared.http.get("/beta/security/alerts_v2?$top=3", headers={"Authorization": f"Bearer {token}"}).json()
    assert [a["id"] for a in beta["value"]] == [a["id"] for a in v1]


def test_evolvable_enum_members_need_the_prefer_header(tmp_path):
    for shared in serve(tmp_path, audit_records=3000):
        _check_evolvable(shared)


def _check_evolvable(shared):
    token = shared.token(GRAPH)
    flt = {"$filter": "serviceSource eq 'microsoftDefenderForCloud'", "$top": "1000"}
    opted = shared.http.get(
        "/v1.0/security/alerts_v2",
        params=flt,
        headers={"Authorization": f"Bearer {token}", "Prefer": "include-unknown-enum-members"},
    ).json()["value"]
    assert opted, "the generator makes Defender for Cloud alerts"
    assert {a["serviceSource"] for a in opted} == {"microsoftDefenderForCloud"}
    assert {a["detectionSource"] for a in opted} == {"microsoftDefenderForStorage"}
    plain = shared.graph("alerts_v2", token, params=flt).json()["value"]
    assert [a["id"] for a in plain] == [a["id"] for a in opted]
    assert {a["serviceSource"] for a in plain} == {a["detectionSource"] for a in plain} == {"unknownFutureValue"}


def test_expand_failure_knob(tenant):
    token = tenant.token(GRAPH)
    tenant.emu.faults.update(expand_failure_rate=1.0)
    flt = "lastUpdateDateTime ge 2000-01-01T00:00:00Z"
    r = tenant.graph("incidents", token, params={"$expand": "alerts", "$filter": flt})
    assert r.status_code == 500 and r.json()["error"]["code"] == "UnknownError"
    assert tenant.graph("incidents", token, params={"$filter": flt}).status_code == 200


def test_time_filters_are_exact_at_the_boundaries(shared):
    token = shared.token(GRAPH)
    items, _ = _all(shared, "alerts_v2?$top=1000&$orderby=lastUpdateDateTime asc", token)
    pivot = items[len(items) // 2]["lastUpdateDateTime"]
    expected = {
        "le": {a["id"] for a in items if a["lastUpdateDateTime"] <= pivot},
        "lt": {a["id"] for a in items if a["lastUpdateDateTime"] < pivot},
        "ge": {a["id"] for a in items if a["lastUpdateDateTime"] >= pivot},
        "gt": {a["id"] for a in items if a["lastUpdateDateTime"] > pivot},
        "eq": {a["id"] for a in items if a["lastUpdateDateTime"] == pivot},
    }
    for op, ids in expected.items():
        got, _ = _all(shared, f"alerts_v2?$top=1000&$filter=lastUpdateDateTime {op} {pivot}", token)
        assert {a["id"] for a in got} == ids, op
    # adjacent windows [a, b) and [b, c) cover everything exactly once
    lo, hi = items[0]["lastUpdateDateTime"], items[-1]["lastUpdateDateTime"]
    w1, _ = _all(shared, f"alerts_v2?$filter=lastUpdateDateTime ge {lo} and lastUpdateDateTime lt {pivot}", token)
    w2, _ = _all(shared, f"alerts_v2?$filter=lastUpdateDateTime ge {pivot} and lastUpdateDateTime le {hi}", token)
    assert sorted(a["id"] for a in w1 + w2) == sorted(a["id"] for a in items)
