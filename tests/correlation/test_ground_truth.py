"""Precision and recall of correlation against the tenant emulator's ground truth
(``Dataset.expected_links``), through the real normalizers and the real index.

The generator plants correlated non-DLP alerts (Defender for Endpoint, Office 365, Identity,
Cloud Apps, Cloud; minutes or hours after their DLP record) and decoys (a user without DLP
activity within two hours, files and messages no DLP event has, an incident of their own).
The ground truth is computed from the generator's facts by a brute-force join under the
documented rules, independently of ``forwarder.correlation``; the index must find exactly it:
every link, every reason, nothing else (precision and recall 100 %)."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from emulators.tenant.config import EmulatorConfig
from emulators.tenant.generator import Dataset
from emulators.tenant.truth import ExpectedLink
from forwarder.correlation.index import CorrelationIndex
from forwarder.errors import MalformedRecord
from forwarder.schema import DlpEvent
from forwarder.source import NormalizeContext
from sources.normalize.graph import normalize_alert
from sources.normalize.management_activity import normalize_audit_record
from tests.correlation.helpers import index_in_order

ANCHOR = 1_790_000_000.0


def _events(ds: Dataset) -> tuple[list[DlpEvent], list[DlpEvent]]:
    ctx = NormalizeContext("o365", "management_activity", "t1", {}, "2026-11-01T00:00:00Z")
    gctx = NormalizeContext("graph", "graph_security", "t1", {}, "2026-11-01T00:00:00Z")
    records = []
    for i in range(ds.n):
        try:
            records += normalize_audit_record(ds.record(i), ctx)
        except MalformedRecord:
            pass
    alerts = [normalize_alert(ds.alert(j), gctx)[0] for j in range(ds.alert_count)]
    return records, alerts


def _found(idx: CorrelationIndex) -> set[ExpectedLink]:
    return {ExpectedLink(lk.dlp, lk.alert, lk.reasons) for lk in idx.links()}


def _score(found: set[ExpectedLink], expected: set[ExpectedLink]) -> tuple[float, float]:
    hits = len(found & expected)
    return hits / max(1, len(found)), hits / max(1, len(expected))


def test_planted_alerts_cover_the_services_and_decoys_link_to_nothing() -> None:
    ds = Dataset(EmulatorConfig(seed=9, audit_records=3000, days=4, users=40), ANCHOR, "t1")
    truth = ds.expected_links()
    linked = collections.Counter(lk.alert for lk in truth)
    roles = collections.defaultdict(list)
    for j in range(ds.alert_count):
        roles[ds.alert_role(j)].append(j)
    assert len(roles["decoy"]) >= 10 and len(roles["correlated"]) >= 15
    # every correlated alert links (to its own record at least), no decoy links to anything
    for j in roles["correlated"]:
        spec = ds.defender_spec(j)
        own = f"audit:{ds.facts(spec.record).id}"
        assert any(lk.dlp == own and lk.alert == f"alert:{ds.alert_id(j)}" for lk in truth), (j, spec.kind)
    assert not [j for j in roles["decoy"] if linked[f"alert:{ds.alert_id(j)}"]]
    services = {ds.alert(j)["serviceSource"] for j in roles["correlated"] + roles["decoy"]}
    assert {
        "microsoftDefenderForEndpoint",
        "microsoftDefenderForOffice365",
        "microsoftDefenderForIdentity",
    } <= services
    assert {ds.alert(j)["serviceSource"] for j in roles["decoy"]} >= {
        "microsoftDefenderForEndpoint",
        "microsoftDefenderForOffice365",
        "microsoftDefenderForIdentity",
    }
    # some created an hour or more after their record, some within minutes
    lags = [ds.alert_times(j)[0] - ds.facts(ds.defender_spec(j).record).time for j in roles["correlated"]]
    assert any(lag >= 3600 for lag in lags) and any(lag < 1800 for lag in lags)
    # realistic evidence per service
    kinds = {
        "microsoftDefenderForEndpoint": "deviceEvidence",
        "microsoftDefenderForOffice365": "analyzedMessageEvidence",
        "microsoftDefenderForIdentity": "ipEvidence",
    }
    for j in roles["correlated"] + roles["decoy"]:
        alert = ds.alert(j)
        want = kinds.get(alert["serviceSource"])
        types = {e["@odata.type"].rsplit(".", 1)[-1] for e in alert["evidence"]}
        assert want is None or want in types, (alert["serviceSource"], types)
        if alert["serviceSource"] == "microsoftDefenderForOffice365":
            assert "mailboxEvidence" in types
    # deterministic per seed
    again = Dataset(EmulatorConfig(seed=9, audit_records=3000, days=4, users=40), ANCHOR, "t1")
    assert again.expected_links() == truth


@pytest.mark.parametrize("order", ["records_first", "alerts_first", "shuffled"])
def test_index_finds_exactly_the_planted_links(tmp_path: Path, order: str) -> None:
    ds = Dataset(EmulatorConfig(seed=21, audit_records=6000, days=6, users=60), ANCHOR, "t1")
    expected = set(ds.expected_links())
    assert len(expected) >= 80
    records, alerts = _events(ds)
    idx = index_in_order(str(tmp_path), records, alerts, order, 400)
    found = _found(idx)
    idx.close()
    precision, recall = _score(found, expected)
    missing, extra = sorted(expected - found), sorted(found - expected)
    assert (precision, recall) == (1.0, 1.0), f"missing {missing[:3]}, not planted {extra[:3]}"
