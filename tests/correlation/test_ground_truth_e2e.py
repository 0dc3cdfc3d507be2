"""End to end against the tenant emulator's ground truth: the real Forwarder (graph_security
with every alert + management_activity, over TLS with msal, correlation on, file sink) runs
twice, the emulated clock moved hours between the runs, so that for some planted links the
alert arrives in the first run and its DLP record in the second, and for others the reverse.

The links found -- in the index, as ``correlation`` events and in the enrichment of the DLP
events -- must equal ``Dataset.expected_links()`` exactly (precision and recall 100 %), the
non-DLP alerts must be counted as read for correlation only and never delivered."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from emulators.tenant import EmulatorConfig, TenantEmulator
from emulators.tenant.generator import Dataset
from emulators.tenant.truth import ExpectedLink
from forwarder.cli import main
from forwarder.correlation.index import DB_NAME, CorrelationIndex
from forwarder.correlation.settings import CorrelationSettings
from forwarder.runtime import Forwarder
from tests.sources.emulated import (
    config_text,
    delivered,
    graph_source,
    load,
    management_activity_source,
    serve,
    tolerate_advanced_clock,
)

pytestmark = pytest.mark.timeout(240)

MARGIN = 600.0  # seconds either side of the first run: setup time, the sources' overlap and lag
PROBE_ANCHOR = 1_790_000_000.0


def _config(**kw: Any) -> EmulatorConfig:
    return EmulatorConfig(
        seed=31, audit_records=1500, days=0.5, records_per_blob=8, blob_latency=1800.0, alert_every=3, users=30, **kw
    )


def _arrivals(ds: Dataset) -> tuple[dict[str, float], dict[str, float]]:
    """When each DLP record becomes listable, and when each alert exists (last update: the
    Graph source may see it only then)."""
    records: dict[str, float] = {}
    for k in range(ds.blob_count):
        blob = ds.blob("DLP.All", k)
        assert blob is not None
        for i in range(blob.first, blob.last):
            records[f"audit:{ds.facts(i).id}"] = blob.visible_at
    alerts = {f"alert:{ds.alert_id(j)}": ds.alert_times(j)[1] for j in range(ds.alert_count)}
    return records, alerts


def _split(ds: Dataset, truth: list[ExpectedLink], t1: float) -> tuple[int, int]:
    """(links whose alert exists before t1 and record after, links whose record exists before and alert after)."""
    records, alerts = _arrivals(ds)
    alert_first = record_first = 0
    for lk in truth:
        if lk.dlp not in records:
            continue
        r, a = records[lk.dlp], alerts[lk.alert]
        alert_first += a <= t1 - MARGIN and r >= t1 + MARGIN
        record_first += r <= t1 - MARGIN and a >= t1 + MARGIN
    return alert_first, record_first


def _first_run_time(ds: Dataset, truth: list[ExpectedLink]) -> float:
    """The first run's time (in the data set's terms) that splits the most planted links both ways."""
    best, best_t = (-1, -1), ds.anchor
    t = ds.t0 + 3600.0
    while t < ds.anchor - 1800.0:
        split = _split(ds, truth, t)
        if min(split) > min(best):
            best, best_t = split, t
        t += 600.0
    assert min(best) >= 2, f"the data set cannot split the links both ways: {best}"
    return best_t


def _found_in_output(events: list[dict[str, Any]]) -> set[ExpectedLink]:
    found: set[ExpectedLink] = set()
    for e in events:
        corr = (e.get("enrichment") or {}).get("correlation") or {}
        if e["kind"] == "correlation":
            link = corr["link"]
            dlp = link["dlp_event"]
            dlp_id = "alert:" + dlp["id"] if dlp["kind"] == "alert" else dlp["id"]  # audit ids keep "audit:"
            found.add(ExpectedLink(dlp_id, "alert:" + link["alert"]["id"], tuple(link["reasons"])))
        else:
            for rel in corr.get("related_alerts", []):
                found.add(ExpectedLink(e["id"], "alert:" + rel["id"], tuple(rel["reasons"])))
    return found


def _indexed(state_dir: Path) -> set[str]:
    db = sqlite3.connect(f"file:{state_dir / DB_NAME}?mode=ro", uri=True)
    try:
        return {eid for (eid,) in db.execute("SELECT eid FROM items")}
    finally:
        db.close()


def test_links_found_end_to_end_equal_the_ground_truth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tolerate_advanced_clock(monkeypatch)
    probe = Dataset(_config(), PROBE_ANCHOR, "probe")
    probe_truth = probe.expected_links()
    ahead = PROBE_ANCHOR - _first_run_time(probe, probe_truth)  # the data set's end, after the first run
    anchor = dt.datetime.fromtimestamp(time.time() + ahead, dt.UTC)
    emu = TenantEmulator(_config(anchor=anchor), state_dir=tmp_path / "emu")
    truth = set(emu.data.expected_links())
    assert len(truth) == len(probe_truth) >= 60  # the same data set, shifted in time
    state = tmp_path / "state"
    with serve(emu) as server:
        text = config_text(
            emu,
            server,
            tmp_path,
            [
                management_activity_source(emu, server, start_hours=24),
                graph_source(server, all_alerts=True, start_days=1),
            ],
        )
        text += "\n[correlation]\nenabled = true\n"
        config, host = load(text)
        with Forwarder(config, host) as fw:
            first = fw.run_once()
            after_first = len(delivered(tmp_path))
            indexed_first = _indexed(state)
            emu.clock.advance(seconds=ahead + 2 * 3600)  # past the data set's end and the blob latency
            second = fw.run_once()
            totals = fw.store.totals()
            withheld_metric = fw.metrics.value("dlpfwd_source_events_total", source="graph", stage="correlation_only")
    assert first.ok and second.ok, (first.errors, second.errors)
    events = delivered(tmp_path)

    # 1. the index holds exactly the planted links, with their reasons
    idx = CorrelationIndex(str(state), CorrelationSettings(enabled=True))
    in_index = {ExpectedLink(lk.dlp, lk.alert, lk.reasons) for lk in idx.links()}
    idx.close()
    assert in_index == truth, (sorted(truth - in_index)[:3], sorted(in_index - truth)[:3])

    # 2. the sinks received exactly the planted links: enrichment of the DLP events + correlation events
    out = _found_in_output(events)
    assert out == truth, (sorted(truth - out)[:3], sorted(out - truth)[:3])

    # 3. the two sides arrived hours apart, both ways round
    correlation_events = [e for e in events if e["kind"] == "correlation"]
    late_pairs = {(e["enrichment"]["correlation"]["link"]["dlp_event"]["id"]) for e in correlation_events}
    assert len(correlation_events) >= 2 and len(late_pairs) >= 2  # DLP side spooled before its alert came
    alert_first = [
        e
        for e in events[after_first:]
        if e["kind"] == "audit"
        and any("alert:" + r["id"] in indexed_first for r in e["enrichment"]["correlation"]["related_alerts"])
    ]
    assert len(alert_first) >= 2  # alert indexed in the first run, its DLP record enriched in the second

    # 4. non-DLP alerts: read, indexed, counted, never delivered
    non_dlp = {f"alert:{emu.data.alert_id(j)}" for j in range(emu.data.alert_count) if emu.data.is_defender_alert(j)}
    assert not {e["id"] for e in events if e["kind"] == "alert"} & non_dlp
    assert non_dlp <= indexed_first | _indexed(state)
    withheld = totals["graph"]["correlation_only"]
    assert withheld >= len(non_dlp) and withheld_metric == withheld
    config_file = tmp_path / "dlpfwd.toml"
    config_file.write_text(text)
    assert main(["--config", str(config_file), "state", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sources"]["graph"]["correlation_only"] == withheld
    assert main(["--config", str(config_file), "state"]) == 0
    assert f"non-DLP alerts indexed for correlation only (not forwarded) {withheld}" in capsys.readouterr().out
