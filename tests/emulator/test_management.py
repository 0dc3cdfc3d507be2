"""Office 365 Management Activity API emulation: subscriptions, listing rules, paging, blobs, errors."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from emulators.tenant import FaultConfig
from emulators.tenant.tokens import GRAPH, MANAGEMENT

from .conftest import serve


def _fmt(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _windows(emu, hours: float = 24):
    """Adjacent windows covering the whole data set up to emulated now (+ a little)."""
    now = emu.clock.time()
    start = max(emu.data.t0 - 3600, now - 7 * 86400 + 60)
    while start < now + 3600:
        end = min(start + hours * 3600, now + 3600)
        yield _fmt(start), _fmt(end)
        start = end


def _list_all(tenant, content_type="DLP.All", token=None, publisher=None):
    token = token or tenant.token(MANAGEMENT)
    blobs, pages = [], 0
    for start, end in _windows(tenant.emu):
        params = {"contentType": content_type, "startTime": start, "endTime": end}
        if publisher:
            params["PublisherIdentifier"] = publisher
        r = tenant.mgmt("GET", "subscriptions/content", token, params=params)
        while True:
            assert r.status_code == 200, r.text
            blobs.extend(r.json())
            pages += 1
            nxt = r.headers.get("NextPageUri")
            if not nxt:
                break
            r = tenant.mgmt("GET", nxt, token)
    return blobs, pages


def _fetch_ids(tenant, blobs, token=None):
    token = token or tenant.token(MANAGEMENT)
    ids, records = [], []
    for b in blobs:
        r = tenant.mgmt("GET", b["contentUri"], token)
        assert r.status_code == 200, r.text
        for rec in r.json():
            ids.append(rec["Id"])
            records.append(rec)
    return ids, records


def test_subscriptions_lifecycle(tenant):
    token = tenant.token(MANAGEMENT)
    r = tenant.mgmt("GET", "subscriptions/content", token, params={"contentType": "DLP.All"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "AF20022"
    r = tenant.mgmt("POST", "subscriptions/start", token, params={"contentType": "DLP.All"})
    assert r.status_code == 200 and r.json() == {"contentType": "DLP.All", "status": "enabled", "webhook": None}
    r = tenant.mgmt("POST", "subscriptions/start", token, params={"contentType": "DLP.All"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "AF20024"
    assert tenant.mgmt("GET", "subscriptions/list", token).json() == [
        {"contentType": "DLP.All", "status": "enabled", "webhook": None}
    ]
    r = tenant.mgmt("POST", "subscriptions/start", token, params={"contentType": "Audit.Nope"})
    assert r.json()["error"]["code"] == "AF20020"
    assert tenant.mgmt("POST", "subscriptions/stop", token, params={"contentType": "DLP.All"}).status_code == 200
    r = tenant.mgmt("GET", "subscriptions/content", token, params={"contentType": "DLP.All"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "AF20023"
    r = tenant.mgmt("POST", "subscriptions/stop", token, params={"contentType": "Audit.General"})
    assert r.json()["error"]["code"] == "AF20022"


def test_every_record_arrives_once_via_paged_listing(tenant):
    token = tenant.token(MANAGEMENT)
    tenant.emu.management.page_size = 4
    tenant.mgmt("POST", "subscriptions/start", token, params={"contentType": "DLP.All"})
    blobs, pages = _list_all(tenant, token=token)
    assert pages > len(list(_windows(tenant.emu)))  # NextPageUri paging happened
    assert len({b["contentId"] for b in blobs}) == len(blobs) == len(tenant.emu.expected_blobs())
    for b in blobs:
        created = dt.datetime.fromisoformat(b["contentCreated"].replace("Z", "+00:00"))
        expires = dt.datetime.fromisoformat(b["contentExpiration"].replace("Z", "+00:00"))
        assert (expires - created) == dt.timedelta(days=7)
    ids, records = _fetch_ids(tenant, blobs, token)
    assert len(ids) == len(set(ids)) == tenant.emu.config.audit_records
    assert set(ids) == tenant.emu.expected_audit_ids(("DLP.All",))
    workloads = {r["Workload"] for r in records}
    assert workloads == {"Exchange", "SharePoint", "OneDrive", "MicrosoftTeams", "Endpoint"}
    assert {r["RecordType"] for r in records} >= {11, 13, 63}


def test_audit_feeds_split_by_workload(shared):
    token = shared.token(MANAGEMENT)
    for ct in ("Audit.Exchange", "Audit.SharePoint", "Audit.General"):
        shared.mgmt("POST", "subscriptions/start", token, params={"contentType": ct})
        blobs, _ = _list_all(shared, ct, token)
        ids, records = _fetch_ids(shared, blobs, token)
        assert set(ids) == shared.emu.expected_audit_ids((ct,))
        assert all("SensitiveInformationDetections" not in orjson.dumps(r).decode() for r in records)
    every = shared.emu.expected_audit_ids(("Audit.Exchange", "Audit.SharePoint", "Audit.General"))
    assert every == shared.emu.expected_audit_ids(("DLP.All",))


def test_detected_values_only_with_readdlp(tenant):
    token = tenant.token(MANAGEMENT)
    tenant.mgmt("POST", "subscriptions/start", token, params={"contentType": "DLP.All"})
    blobs, _ = _list_all(tenant, token=token)
    _, records = _fetch_ids(tenant, blobs[:3], token)
    dlp = [r for r in records if r["RecordType"] in (11, 13)]
    assert dlp and all(r["SensitiveInfoDetectionIsIncluded"] for r in dlp)
    assert any("SensitiveInformationDetections" in orjson.dumps(r).decode() for r in dlp)
    tenant.emu.set_roles(MANAGEMENT, ["ActivityFeed.Read"])
    _, records = _fetch_ids(tenant, blobs[:3], tenant.token(MANAGEMENT))
    dlp = [r for r in records if r["RecordType"] in (11, 13)]
    assert not any(r["SensitiveInfoDetectionIsIncluded"] for r in dlp)
    assert not any("SensitiveInformationDetections" in orjson.dumps(r).decode() for r in dlp)


@pytest.mark.parametrize(
    "params",
    [
        {"startTime": "-25h", "endTime": "0h"},  # more than 24 h
        {"startTime": "-170h", "endTime": "-160h"},  # start older than 7 days
        {"startTime": "-2h"},  # start without end
        {"startTime": "-1h", "endTime": "-2h"},  # end before start
    ],
)
def test_window_rules_af20055(shared, params):
    now = shared.emu.clock.time()
    query = {"contentType": "DLP.All"}
    for k, v in params.items():
        query[k] = _fmt(now + float(v[:-1]) * 3600)
    token = shared.token(MANAGEMENT)
    shared.mgmt("POST", "subscriptions/start", token, params={"contentType": "DLP.All"})
    r = shared.mgmt("GET", "subscriptions/content", token, params=query)
    assert r.status_code == 400 and r.json()["error"]["code"] == "AF20055"


def test_bad_parameters(shared):
    token = shared.token(MANAGEMENT)
    shared.mgmt("POST", "subscriptions/start", token, params={"contentType": "DLP.All"})
    r = shared.mgmt("GET", "subscriptions/content", token, params={"contentType": "DLP.All", "nextPage": "garbage"})
    assert r.json()["error"]["code"] == "AF20031"
    r = shared.mgmt(
        "GET",
        "subscriptions/content",
        token,
        params={"contentType": "DLP.All", "startTime": "yesterday", "endTime": "today"},
    )
    assert r.json()["error"]["code"] == "AF20002"
    r = shared.mgmt("GET", "subscriptions/content", token)
    assert r.json()["error"]["code"] == "AF20001"
    assert shared.mgmt("GET", "audit/not-a-content-id", token).json()["error"]["code"] == "AF20052"
    blob = shared.emu.expected_blobs()[0]
    unknown = blob.content_id.replace("$dlp_all$DLP_All$", "$audit_exchange$Audit_Exchange$").replace(
        f"{blob.index:09d}", "999999999"
    )
    assert shared.mgmt("GET", f"audit/{unknown}", token).json()["error"]["code"] == "AF20050"
    names = shared.mgmt("GET", "resources/dlpSensitiveTypes", token, headers={"Accept-Language": "en-US"}).json()
    assert {"id": "50842eb7-edc8-4019-85dd-5a5c1f2bb085", "name": "Credit Card Number"} in names


def test_content_expires_after_seven_days(tenant):
    token = tenant.token(MANAGEMENT)
    tenant.mgmt("POST", "subscriptions/start", token, params={"contentType": "DLP.All"})
    blobs, _ = _list_all(tenant, token=token)
    first = blobs[0]
    tenant.emu.faults.update(token_lifetime=30 * 86400)
    token = tenant.token(MANAGEMENT)
    tenant.emu.clock.advance(days=8)
    r = tenant.mgmt("GET", first["contentUri"], token)
    assert r.status_code == 400 and r.json()["error"]["code"] == "AF20051"
    assert tenant.emu.expected_audit_ids() == set()


def test_auth_errors(tenant):
    r = tenant.http.get(f"{tenant.feed}/subscriptions/list")
    assert r.status_code == 401 and r.json() == {"Message": "Authorization has been denied for this request."}
    assert tenant.mgmt("GET", "subscriptions/list", tenant.token(GRAPH)).status_code == 401
    other = "00000000-1111-2222-3333-444444444444"
    r = tenant.mgmt("GET", f"/api/v1.0/{other}/activity/feed/subscriptions/list")
    assert r.status_code == 401 and r.json()["error"]["code"] == "AF20010"
    r = tenant.mgmt("GET", "/api/v1.0/contoso/activity/feed/subscriptions/list")
    assert r.json()["error"]["code"] == "AF20013"
    tenant.emu.set_roles(MANAGEMENT, [])
    r = tenant.mgmt("GET", "subscriptions/list", tenant.token(MANAGEMENT))
    assert r.status_code == 401 and r.json()["error"]["code"] == "AF10001"


def test_throttling_and_publisher_accounting(tenant):
    token = tenant.token(MANAGEMENT)
    pub = tenant.emu.publisher_id
    tenant.emu.faults.update(management_rate_limit=2)
    codes = [tenant.mgmt("GET", "subscriptions/list", token, params={"PublisherIdentifier": pub}) for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert codes[2].json()["error"]["code"] == "AF429"
    assert f"PublisherId={pub}" in codes[2].json()["error"]["message"]
    assert "Retry-After" not in codes[2].headers
    # another publisher has its own quota
    assert tenant.mgmt("GET", "subscriptions/list", token, params={"PublisherIdentifier": "other"}).status_code == 200
    assert tenant.emu.stats()["publishers"][pub] == 3
    tenant.emu.faults.update(management_rate_limit=0, error_rate=1.0)
    r = tenant.mgmt("GET", "subscriptions/list", token)
    assert r.status_code in (500, 503) and r.json()["error"]["code"] == "AF50000"


def test_late_duplicate_malformed_and_out_of_order_faults(tmp_path):
    faults = FaultConfig(
        duplicate_rate=0.3, malformed_rate=0.02, late_rate=0.2, late_delay=4 * 3600, out_of_order_rate=0.05
    )
    for tenant in serve(tmp_path, faults=faults, audit_records=800):
        emu = tenant.emu
        token = tenant.token(MANAGEMENT)
        tenant.mgmt("POST", "subscriptions/start", token, params={"contentType": "DLP.All"})
        late = emu.expected_late_blobs()
        assert late
        blobs, _ = _list_all(tenant, token=token)
        listed = {b["contentId"] for b in blobs}
        # late blobs whose delay has not passed are not listed yet
        hidden = {b.content_id for b in late if b.visible_at > emu.clock.time()}
        assert hidden and not (hidden & listed)
        ids, records = _fetch_ids(tenant, blobs, token)
        malformed = emu.expected_malformed_ids()
        assert malformed and malformed <= set(ids)
        bad = [r for r in records if r["Id"] in malformed]
        assert all(not isinstance(r["PolicyDetails"], list) for r in bad)
        dups = emu.expected_duplicate_ids()
        assert dups and all(ids.count(i) >= 2 for i in dups if i in ids)
        assert set(ids) - malformed == emu.expected_audit_ids()
        # records are not chronological across blobs
        times = [r["CreationTime"] for r in records if r["Id"] not in malformed]
        assert times != sorted(times)
        # re-listing the same windows after the delay shows the late blobs
        emu.faults.update(token_lifetime=86400)
        token = tenant.token(MANAGEMENT)
        emu.clock.advance(hours=5)
        blobs2, _ = _list_all(tenant, token=token)
        assert hidden <= {b["contentId"] for b in blobs2}


def test_blob_cache_serves_identical_content(tenant):
    import time

    token = tenant.token(MANAGEMENT)
    tenant.mgmt("POST", "subscriptions/start", token, params={"contentType": "DLP.All"})
    blob = _list_all(tenant, token=token)[0][0]
    first = tenant.mgmt("GET", blob["contentUri"], token).content
    deadline = time.monotonic() + 10
    while not len(tenant.emu.management._blob_cache) and time.monotonic() < deadline:
        time.sleep(0.01)
    second = tenant.mgmt("GET", blob["contentUri"], token).content
    assert second == first
    assert tenant.emu.stats()["blob_cache_hits"] == 1
