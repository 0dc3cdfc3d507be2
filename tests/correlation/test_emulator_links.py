"""The tenant emulator's planted Defender alerts, through the real normalizers and the index:
every correlated non-DLP alert the generator makes about a DLP record's user and time links to
that audit record, whichever side arrives first and however far apart (the exact link set,
decoys included, is checked against the ground truth in test_ground_truth.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulators.tenant.config import EmulatorConfig
from emulators.tenant.generator import Dataset
from forwarder.schema import DlpEvent
from forwarder.source import NormalizeContext
from sources.normalize.graph import normalize_alert
from sources.normalize.management_activity import normalize_audit_record
from tests.correlation.helpers import index_in_order


def _data() -> tuple[list[DlpEvent], list[DlpEvent], set[tuple[str, str]], dict[tuple[str, str], str]]:
    ds = Dataset(EmulatorConfig(seed=9, audit_records=1400, days=3, alert_every=10, users=40), 1_790_000_000.0, "t1")
    ctx = NormalizeContext("o365", "management_activity", "t1", {}, "2026-11-01T00:00:00Z")
    gctx = NormalizeContext("graph", "graph_security", "t1", {}, "2026-11-01T00:00:00Z")
    records = [normalize_audit_record(ds.record(i), ctx)[0] for i in range(ds.history)]
    alerts = [normalize_alert(ds.alert(j), gctx)[0] for j in range(ds.alert_count)]
    planted: set[tuple[str, str]] = set()
    kind: dict[tuple[str, str], str] = {}
    for j in range(ds.alert_count):
        if ds.alert_role(j) == "correlated":
            record = records[ds.alert_record_index(j)]
            pair = (record.id, f"alert:{ds.alert_id(j)}")
            planted.add(pair)
            kind[pair] = ds.defender_spec(j).kind + ":" + record.workload
    return records, alerts, planted, kind


@pytest.mark.parametrize("order", ["records_first", "alerts_first", "shuffled"])
def test_every_planted_link_is_found(tmp_path: Path, order: str) -> None:
    records, alerts, planted, kind = _data()
    assert len(planted) >= 10
    idx = index_in_order(str(tmp_path), records, alerts, order, 200)
    links = {lk.pair: lk for lk in idx.links()}
    missing = planted - set(links)
    assert not missing, f"{len(missing)} planted link(s) not found, e.g. {sorted(missing)[:3]}"
    for pair in planted:
        reasons = links[pair].reasons
        assert "same_user:upn" in reasons, (pair, reasons)
        if kind[pair] in ("mde:Endpoint", "mdi:Endpoint"):  # their device evidence is the user's device
            assert "same_device:dev" in reasons and "same_device:host" in reasons, (pair, reasons)
    # late: with the records indexed first, every planted link is announced as a correlation event
    late = {lk.pair for lk in links.values() if lk.late}
    if order == "records_first":
        assert planted <= late
    if order == "alerts_first":
        assert not late & planted
    idx.close()
