"""Graph audit log queries: asynchronous status, filters, record paging, permissions."""

from __future__ import annotations

import time

from emulators.tenant.generator import graph_time
from emulators.tenant.tokens import GRAPH


def _wait_succeeded(tenant, qid, token):
    deadline = time.monotonic() + 10
    statuses = []
    while time.monotonic() < deadline:
        status = tenant.graph(f"auditLog/queries/{qid}", token).json()["status"]
        statuses.append(status)
        if status == "succeeded":
            return statuses
        time.sleep(0.05)
    raise AssertionError(f"query never succeeded: {statuses[-3:]}")


def _records(tenant, qid, token, top=40):
    out, url = [], f"auditLog/queries/{qid}/records?$top={top}"
    while url:
        body = tenant.graph(url, token).json()
        out.extend(body["value"])
        url = body.get("@odata.nextLink")
    return out


def test_query_lifecycle_and_paged_records(tenant):
    tenant.emu.audit_queries.run_seconds = 0.3
    token = tenant.token(GRAPH)
    d = tenant.emu.data
    start, end = d.t0 + 3600, d.t0 + 13 * 3600
    body = {
        "@odata.type": "#microsoft.graph.security.auditLogQuery",
        "displayName": "dlpfwd test",
        "filterStartDateTime": graph_time(start),
        "filterEndDateTime": graph_time(end),
        "recordTypeFilters": ["complianceDLPSharePoint", "complianceDLPExchange"],
    }
    r = tenant.http.post("/v1.0/security/auditLog/queries", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201 and r.json()["status"] == "notStarted"
    qid = r.json()["id"]
    early = tenant.graph(f"auditLog/queries/{qid}/records", token)
    assert early.status_code == 400
    statuses = _wait_succeeded(tenant, qid, token)
    assert statuses[-1] == "succeeded"
    records = _records(tenant, qid, token)
    expected = {
        d.facts(i).id
        for i in range(d.n)
        if start <= d.facts(i).time < end and d.facts(i).workload != "Endpoint" and not d.facts(i).malformed
    }
    assert {r["id"] for r in records} == expected and len(records) == len(expected) > 40
    rec = records[0]
    assert rec["auditLogRecordType"] in ("complianceDLPSharePoint", "complianceDLPExchange")
    assert rec["auditData"]["Id"] == rec["id"] and rec["auditData"]["PolicyDetails"]
    assert any(q["id"] == qid for q in tenant.graph("auditLog/queries", token).json()["value"])


def test_operation_and_user_filters(tenant):
    tenant.emu.audit_queries.run_seconds = 0
    token = tenant.token(GRAPH)
    d = tenant.emu.data
    upn = d.facts(5).user.upn
    body = {
        "filterStartDateTime": graph_time(d.t0),
        "filterEndDateTime": graph_time(d.anchor + 60),
        "operationFilters": ["DlpRuleUndo"],
        "userPrincipalNameFilters": [upn],
    }
    r = tenant.http.post("/v1.0/security/auditLog/queries", json=body, headers={"Authorization": f"Bearer {token}"})
    records = _records(tenant, r.json()["id"], token)
    assert all(x["operation"] == "DlpRuleUndo" and x["userPrincipalName"] == upn for x in records)


def test_permission_and_validation_errors(tenant):
    token = tenant.token(GRAPH)
    r = tenant.http.post(
        "/v1.0/security/auditLog/queries", json={"displayName": "x"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest"
    assert tenant.graph("auditLog/queries/nope", token).status_code == 404
    tenant.emu.set_roles(GRAPH, ["SecurityAlert.Read.All"])
    r = tenant.graph("auditLog/queries", tenant.token(GRAPH))
    assert r.status_code == 403 and "AuditLogsQuery.Read.All" in r.json()["error"]["message"]
