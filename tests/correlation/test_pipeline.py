"""The correlation stage inside the real pipeline: enrichment reaches the sinks, late links
become ``correlation`` events once, non-DLP alerts are indexed but not forwarded, failing or
hung enrichers flag events and never lose them, and correlation off costs nothing."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from forwarder.config import Config, ForwarderSettings, SinkConfig, SourceConfig
from forwarder.correlation.index import DB_NAME
from forwarder.correlation.settings import CorrelationSettings
from forwarder.hookspecs import hookimpl
from forwarder.options import SinkOptions, SourceOptions
from forwarder.plugins import PluginHost
from forwarder.runtime import Forwarder
from forwarder.schema import DlpEvent, from_dict, to_dict
from forwarder.sink import Entry, Outcome, Sink
from forwarder.source import NormalizeContext, RawRecord, Source, SourceBatch
from tests.correlation.helpers import alert, dlp


@dataclass
class ScriptSettings:
    path: str = ""  # JSON: a list of batches, each a list of event dicts


class ScriptSource(Source):
    """Yields the batches of its JSON file not read yet (cursor ``{"next": n}``)."""

    settings_class = ScriptSettings

    def poll(self, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        with open(self.settings.path, "rb") as fh:
            batches = orjson.loads(fh.read())
        start = int((cursor or {}).get("next", 0))
        for n in range(start, len(batches)):
            records = [RawRecord("scripted", data, None, "u1") for data in batches[n]]
            yield SourceBatch(records=records, cursor={"next": n + 1})

    def backfill(self, since: Any, until: Any, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        return self.poll(cursor)


def normalize_scripted(data: dict[str, Any], ctx: NormalizeContext) -> list[DlpEvent]:
    return [from_dict(data)]


@dataclass
class CaptureSettings:
    path: str = ""


class CaptureSink(Sink):
    """Appends every delivered payload as one JSON line."""

    settings_class = CaptureSettings

    def write_batch(self, entries: Sequence[Entry]) -> Outcome:
        with open(self.settings.path, "ab") as fh:
            fh.write(b"".join(e.payload + b"\n" for e in entries))
        return Outcome.all_delivered(entries)


class Plugin:
    @hookimpl
    def dlpfwd_register_sources(self, register: Any) -> None:
        register("scripted", ScriptSource)

    @hookimpl
    def dlpfwd_register_sinks(self, register: Any) -> None:
        register("capture", CaptureSink)

    @hookimpl
    def dlpfwd_register_normalizers(self, register: Any) -> None:
        register("scripted", normalize_scripted)


class HrEnricher:
    """A third-party enricher: one batched lookup per batch."""

    calls = 0

    @hookimpl
    def dlpfwd_enrich_events(self, events: list[DlpEvent], context: Any) -> None:
        HrEnricher.calls += 1
        for ev in events:
            if ev.user.upn:
                ev.enrichment["hr"] = {"department": "Finance", "upn": ev.user.upn}


class BrokenEnricher:
    @hookimpl
    def dlpfwd_enrich_events(self, events: list[DlpEvent], context: Any) -> None:
        for ev in events:
            ev.enrichment["broken"] = "half-written"
        raise ConnectionError("CMDB unreachable")


class HungEnricher:
    release = threading.Event()

    @hookimpl
    def dlpfwd_enrich_events(self, events: list[DlpEvent], context: Any) -> None:
        HungEnricher.release.wait(30)
        for ev in events:
            ev.enrichment["hung"] = True


def make_host(*extra: tuple[str, object]) -> PluginHost:
    host = PluginHost()
    host.register_object("correlation_tests", Plugin())
    for name, obj in extra:
        host.register_object(name, obj)
    host.collect(strict=True)
    return host


class Setup:
    def __init__(self, tmp: Path, **correlation: Any) -> None:
        self.state = str(tmp / "state")
        self.script = str(tmp / "batches.json")
        self.out = str(tmp / "out.jsonl")
        self.batches: list[list[dict[str, Any]]] = []
        self.settings = CorrelationSettings(enabled=True)
        for k, v in correlation.items():
            setattr(self.settings, k, v)

    def add(self, *events: DlpEvent) -> None:
        self.batches.append([to_dict(e) for e in events])
        with open(self.script, "wb") as fh:
            fh.write(orjson.dumps(self.batches))

    def config(self) -> Config:
        opts = SinkOptions()
        opts.batch.max_wait = 0.0
        cfg = Config(
            forwarder=ForwarderSettings(state_dir=self.state),
            sources=[SourceConfig("src", "scripted", ScriptSettings(self.script), SourceOptions(poll_interval=0.2))],
            sinks=[SinkConfig("out", "capture", CaptureSettings(self.out), opts)],
        )
        cfg.correlation = self.settings
        return cfg

    def run(self, host: PluginHost | None = None) -> None:
        with Forwarder(self.config(), host or make_host()) as fw:
            result = fw.run_once()
        assert result.ok, result.summary()

    def delivered(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.out):
            return []
        with open(self.out, "rb") as fh:
            return [orjson.loads(line) for line in fh if line.strip()]

    def by_id(self) -> dict[str, dict[str, Any]]:
        return {d["id"]: d for d in self.delivered()}


def test_late_alert_becomes_one_correlation_event(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.add(dlp("r1", "alice@contoso.com", 0))
    s.run()
    first = s.by_id()["r1"]["enrichment"]["correlation"]
    assert first["status"] == "ok" and first["related_alerts"] == []
    # an hour later (new process), the Defender alert about the same user arrives
    s.add(alert("a1", "Alice@Contoso.com", 10, incident="2001"))
    s.run()
    got = s.by_id()
    assert "alert:a1" not in got  # non-DLP alerts are indexed, not forwarded (forward_alerts = false)
    corr = got["correlation:r1|alert:a1"]
    assert corr["kind"] == "correlation" and corr["related"]["incident_ids"] == ["2001"]
    link = corr["enrichment"]["correlation"]["link"]
    assert link["reasons"] == ["same_user:upn"]
    assert link["dlp_event"]["id"] == "r1" and link["alert"]["id"] == "a1"
    # the alert is updated twice and re-read: the link is announced once, ever
    s.add(alert("a1", "alice@contoso.com", 10, incident="2001", idempotency_key="alert:a1@2"))
    s.add(alert("a1", "alice@contoso.com", 10, incident="2001", idempotency_key="alert:a1@3"))
    s.run()
    kinds = [d["id"] for d in s.delivered() if d["kind"] == "correlation"]
    assert kinds == ["correlation:r1|alert:a1"]


def test_dlp_event_after_its_alert_carries_the_link(tmp_path: Path) -> None:
    s = Setup(tmp_path, forward_alerts=True)
    s.add(
        alert("a1", "alice@contoso.com", 0, incident="2001"),
        alert("a0", "alice@contoso.com", -3 * 1440, incident="1990"),
    )
    s.add(dlp("r1", "alice@contoso.com", 20))
    s.run()
    got = s.by_id()
    assert "alert:a1" in got  # forward_alerts = true
    c = got["r1"]["enrichment"]["correlation"]
    assert [(r["id"], r["reasons"], r["service_source"]) for r in c["related_alerts"]] == [
        ("a1", ["same_user:upn"], "microsoftDefenderForEndpoint")
    ]
    assert c["incidents"] == ["2001"]
    assert c["prior_incidents"] == {"count": 1, "ids": ["1990"]}
    assert c["entities"]["users"] == ["alice@contoso.com"]
    assert c["links"]["alerts"] == ["https://security.microsoft.com/alerts/a1"]
    assert c["links"]["incidents"] == ["https://security.microsoft.com/incidents/2001?tid=t1"]
    alert_side = got["alert:a1"]["enrichment"]["correlation"]
    assert alert_side["related_events"] == []  # spooled before r1 existed; r1 carries the link
    assert not [d for d in s.delivered() if d["kind"] == "correlation"]


def test_enrichers_run_and_failures_flag_without_loss(tmp_path: Path) -> None:
    s = Setup(tmp_path, enricher_timeout=0.3)
    host = make_host(("hr", HrEnricher()), ("cmdb", BrokenEnricher()), ("slow", HungEnricher()))
    s.add(dlp("r1", "alice@contoso.com", 0), dlp("r2", "bob@contoso.com", 0))
    s.add(dlp("r3", "carol@contoso.com", 0))
    try:
        s.run(host)
    finally:
        HungEnricher.release.set()
    got = s.by_id()
    assert sorted(got) == ["r1", "r2", "r3"]
    for ev in got.values():
        assert ev["enrichment"]["hr"]["department"] == "Finance"
        assert "broken" not in ev["enrichment"]  # nothing of a failed enricher is merged
        errors = ev["enrichment"]["errors"]
        assert errors["cmdb"] == "failed: ConnectionError: CMDB unreachable"
        assert errors["slow"].startswith(("timed out after 0.3 s", "skipped: its previous call"))
        assert ev["enrichment"]["correlation"]["status"] == "ok"
    assert got["r3"]["enrichment"]["errors"]["slow"].startswith("skipped")


def test_correlation_off_costs_nothing(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.settings.enabled = False
    s.add(dlp("r1", "alice@contoso.com", 0), alert("a1", "alice@contoso.com", 1))
    s.run()
    got = s.by_id()
    assert sorted(got) == ["alert:a1", "r1"]
    assert "correlation" not in got["r1"]["enrichment"]
    assert not os.path.exists(os.path.join(s.state, DB_NAME))


def test_state_and_correlation_commands_show_the_index_cost(tmp_path: Path, capsys: Any) -> None:
    from forwarder.cli import main

    s = Setup(tmp_path)
    s.add(dlp("r1", "alice@contoso.com", 0), alert("a1", "alice@contoso.com", 5))
    s.run()
    capsys.readouterr()
    assert main(["state", "--state-dir", s.state]) == 0
    out = capsys.readouterr().out
    assert "correlation index: 2 event(s), 1 link(s)" in out and "evicted (size bound) 0" in out
    assert main(["correlation", "--state-dir", s.state, "--json"]) == 0
    stats = orjson.loads(capsys.readouterr().out)
    assert stats["items"] == 2 and stats["links"] == 1 and stats["bytes"] > 0
