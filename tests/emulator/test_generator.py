"""The seeded generator: determinism, streaming scale, realistic shapes, ground truth of faults."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
import time

import orjson

from emulators.tenant import EmulatorConfig, FaultConfig, TenantEmulator
from emulators.tenant.generator import Dataset, parse_content_id

ANCHOR = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)


def _digest(seed: int, n: int = 200) -> str:
    d = Dataset(EmulatorConfig(seed=seed, audit_records=n), ANCHOR.timestamp(), "t")
    h = hashlib.sha256()
    for i in range(n):
        h.update(orjson.dumps(d.record(i, detections=True)))
    for j in range(d.alert_count):
        h.update(orjson.dumps(d.alert(j)))
    return h.hexdigest()


def test_same_seed_same_data_across_processes():
    code = "import sys; sys.path.insert(0, '.');from tests.emulator.test_generator import _digest; print(_digest(5))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert out.stdout.strip() == _digest(5)
    assert _digest(6) != _digest(5)


def test_same_seed_same_credentials(tmp_path):
    a = TenantEmulator(EmulatorConfig(seed=3), state_dir=tmp_path / "a")
    b = TenantEmulator(EmulatorConfig(seed=3), state_dir=tmp_path / "b")
    assert (a.tenant_id, a.client_id, a.client_secret, a.publisher_id) == (
        b.tenant_id,
        b.client_id,
        b.client_secret,
        b.publisher_id,
    )


def test_millions_of_records_without_materializing():
    started = time.monotonic()
    d = Dataset(EmulatorConfig(seed=1, audit_records=5_000_000, days=7), ANCHOR.timestamp(), "t")
    last = d.record(4_999_999)
    blobs = list(d.blobs_created_between("DLP.All", ANCHOR.timestamp() - 3600, ANCHOR.timestamp() + 3600))
    assert time.monotonic() - started < 5
    assert last["Id"] and len(blobs) > 0
    assert all(b.last <= 5_000_000 for b in blobs)


def test_record_shapes_follow_the_schema():
    d = Dataset(EmulatorConfig(seed=2, audit_records=400), ANCHOR.timestamp(), "tenant-guid")
    records = [d.record(i, detections=True) for i in range(400)]
    by_workload = {r["Workload"]: r for r in records}
    assert set(by_workload) == {"Exchange", "SharePoint", "OneDrive", "MicrosoftTeams", "Endpoint"}
    for r in records:
        assert r["OrganizationId"] == "tenant-guid"
        dt.datetime.strptime(r["CreationTime"], "%Y-%m-%dT%H:%M:%S")  # no zone, no fraction
    ex = by_workload["Exchange"]
    assert int(ex["RecordType"]) == 13 and "ExchangeMetaData" in ex
    rule = ex["PolicyDetails"][0]["Rules"][0]
    assert rule["Severity"] in ("Low", "Medium", "High")
    sit = rule["ConditionsMatched"]["SensitiveInformation"][0]
    assert sit["SensitiveInformationDetections"]["DetectedValues"][0]["Value"]
    assert int(by_workload["SharePoint"]["RecordType"]) == 11
    ep = by_workload["Endpoint"]
    assert int(ep["RecordType"]) == 63 and ep["MDATPDeviceId"] and ep["PolicyMatchInfo"]["PolicyName"]
    ops = {r["Operation"] for r in records}
    assert {"DlpRuleMatch", "DLPRuleMatch", "DlpRuleUndo", "DlpInfo"} <= ops  # casing variants
    infos = [r["ExceptionInfo"] for r in records if "ExceptionInfo" in r]
    assert any(isinstance(i, str) for i in infos) and any(isinstance(i, dict) for i in infos)
    justified = [orjson.loads(i) for i in infos if isinstance(i, str)]
    assert all(j["Justification"] for j in justified)
    assert any(isinstance(r["RecordType"], str) for r in records)  # numbers-as-strings variant
    # without ReadDlp no value leaves the generator
    assert "SensitiveInformationDetections" not in orjson.dumps([d.record(i) for i in range(400)]).decode()


def test_alerts_refer_to_the_same_users_files_and_policies_as_audit_records():
    d = Dataset(EmulatorConfig(seed=4, audit_records=300), ANCHOR.timestamp(), "t")
    for j in range(d.alert_count):
        alert = d.alert(j)
        facts = d.facts(d.alert_record_index(j))
        upns = [e["userAccount"]["userPrincipalName"] for e in alert["evidence"] if "userAccount" in e]
        assert upns == [facts.user.upn]
        if alert["serviceSource"] == "dataLossPrevention":
            assert facts.policy.name in alert["description"] and alert["detectorId"] == facts.rule_id
        else:
            assert alert["serviceSource"].startswith("microsoftDefenderFor")
    created = [d.alert_times(j)[0] for j in range(d.alert_count)]
    assert created == sorted(created)


def test_content_id_round_trip_and_blob_grouping():
    d = Dataset(EmulatorConfig(seed=1, audit_records=1000, records_per_blob=40), ANCHOR.timestamp(), "t")
    b = d.blob("Audit.General", 7)
    assert b is not None and parse_content_id(b.content_id) == ("Audit.General", 7)
    assert all(d.workload(i) in ("MicrosoftTeams", "Endpoint") for i in d.blob_indices(b))
    assert d.blob("DLP.All", d.blob_count) is None


def test_fault_ground_truth_is_stable_and_seeded(tmp_path):
    faults = FaultConfig(duplicate_rate=0.5, malformed_rate=0.05, late_rate=0.3)
    cfg = EmulatorConfig(seed=9, audit_records=1000, anchor=ANCHOR, faults=faults)
    emu = TenantEmulator(cfg, state_dir=tmp_path)
    at = ANCHOR.timestamp() + 86400
    malformed = emu.expected_malformed_ids(now=at)
    dups = emu.expected_duplicate_ids(now=at)
    assert malformed and dups and not (malformed & emu.expected_audit_ids(now=at))
    again = TenantEmulator(
        EmulatorConfig(seed=9, audit_records=1000, anchor=ANCHOR, faults=faults.snapshot()),
        state_dir=tmp_path,
    )
    assert again.expected_malformed_ids(now=at) == malformed and again.expected_duplicate_ids(now=at) == dups
    late = emu.expected_late_blobs()
    assert late and all(b.visible_at - b.created == faults.late_delay for b in late)


def test_ground_truth_since_bounds_by_content_created(tmp_path):
    emu = TenantEmulator(EmulatorConfig(seed=9, audit_records=500, days=3, anchor=ANCHOR), state_dir=tmp_path)
    at = ANCHOR.timestamp() + 3600
    since = at - 86400
    recent = emu.expected_audit_ids(now=at, since=since)
    assert recent < emu.expected_audit_ids(now=at)
    blobs = emu.expected_blobs(now=at, since=since)
    assert blobs and all(b.created >= since for b in blobs)
    assert recent == {emu.data.record_id(i) for b in blobs for i in emu.data.blob_indices(b)}
