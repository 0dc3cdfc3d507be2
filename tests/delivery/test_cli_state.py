"""``dlpfwd state``, ``dead-letters``, ``report`` and ``health`` over a real state directory."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from forwarder.cli import main
from forwarder.runtime import Forwarder
from forwarder.source import SourceBatch, WorkUnit
from forwarder.state.sqlite import SqliteStateStore
from tests.delivery import helpers as h


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--config", "/nonexistent/dlpfwd.toml", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def state(tmp_path: Path) -> str:
    """A state directory after one run: 20 events, one dead letter, two quarantined records."""
    control = tmp_path / "control.json"
    control.write_text('{"reject_ids": ["ev-0000004"]}')
    cfg = h.config(
        str(tmp_path / "state"),
        [h.listed(count=22, batch=22, bad_every=11)],
        [h.recording("siem", str(tmp_path / "out.jsonl"), str(control))],
    )
    with Forwarder(cfg, h.make_host()) as fw:
        result = fw.run_once()
        assert result.delivered["siem"] == 19 and result.dead_letters["siem"] == 1
    control.write_text("{}")
    return str(tmp_path / "state")


def test_state_shows_spools_dead_letters_and_quarantine(state: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "state", "--state-dir", state)
    assert code == 0
    assert "sink siem: spool 0 event(s)" in out and "dead letters 1" in out
    assert "quarantined 2" in out
    code, out, _ = run_cli(capsys, "state", "--state-dir", state, "--json")
    data = json.loads(out)
    assert data["sinks"]["siem"]["delivered"] == 19
    assert data["sources"]["src"]["cursor"] == {"next": 22}


def test_dead_letters_list_replay_purge(state: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "dead-letters", "list", "--sink", "siem", "--state-dir", state)
    assert code == 0 and "event ev-0000004" in out and "not acceptable" in out
    code, out, _ = run_cli(capsys, "dead-letters", "list", "--source", "src", "--state-dir", state, "--payload")
    assert code == 0 and "2 quarantined" in out and "{not json 10" in out
    code, out, _ = run_cli(capsys, "dead-letters", "replay", "--sink", "siem", "--state-dir", state)
    assert code == 0 and "replayed 1" in out
    store = SqliteStateStore(state)
    assert store.spool_depth("siem")[0] == 1 and store.dead_letter_counts() == {}
    store.close()
    code, out, _ = run_cli(capsys, "dead-letters", "purge", "--source", "src", "--state-dir", state)
    assert code == 0 and "purged 2" in out
    code, _, err = run_cli(capsys, "dead-letters", "list", "--sink", "nope", "--state-dir", state)
    assert code == 2 and "no sink named 'nope'" in err


def test_report_says_incomplete_then_complete(state: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "report", "--since", "1h", "--state-dir", state)
    assert code == 1 and "INCOMPLETE" in out
    assert "dead-lettered 1" in out and "quarantined 2" in out
    code, out, _ = run_cli(capsys, "report", "--since", "1h", "--state-dir", state, "--json")
    data = json.loads(out)
    siem = data["sources"]["src"]["sinks"]["siem"]
    assert siem == {"spooled": 20, "delivered": 19, "dead_lettered": 1, "dropped": 0, "pending": 0}


def test_report_names_expired_and_at_risk_units(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = h.config(str(tmp_path / "state"), [h.listed(count=0)], [h.recording("s", str(tmp_path / "o"))])
    now = dt.datetime.now(dt.UTC)
    soon = (now + dt.timedelta(hours=2)).isoformat()
    past = (now - dt.timedelta(hours=2)).isoformat()
    with Forwarder(cfg, h.make_host()) as fw:
        units = [
            WorkUnit("blob-ok", "content", "fetched", listed=1, fetched=1),
            WorkUnit("blob-gone", "content", "expired", detail="contentExpiration passed during an outage"),
            WorkUnit("blob-late", "content", "listed", expires=soon),
            WorkUnit("blob-missed", "content", "listed", expires=past),
        ]
        fw.pipeline.process("src", "listed", fw.sources["src"], SourceBatch(units=units), "source:src")
        warnings = fw.warn_expiring()
        assert any("1 unit(s) not fetched yet" in w and "blob-late" in w for w in warnings)
        assert any("2 unit(s) expired at the source" in w for w in warnings)
    code, out, _ = run_cli(capsys, "report", "--since", "1h", "--state-dir", str(tmp_path / "state"))
    assert code == 1
    assert "LOST: expired at the source: 2 unit(s)" in out
    assert "contentExpiration passed during an outage" in out and "blob-missed" in out
    assert "WARNING: not fetched yet and expiring soon: 1 unit(s)" in out and "blob-late" in out


def test_health_flags_a_silent_source_and_a_stuck_sink(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = h.config(str(tmp_path / "state"), [h.listed(count=5)], [h.recording("s", str(tmp_path / "o"))])
    cfg.sinks[0].options.expect_delivery_within = 60
    cfg.sources[0].options.poll_interval = 60  # a busy machine must not make it late already
    with Forwarder(cfg, h.make_host()) as fw:
        assert fw.run_once().ok
    state = str(tmp_path / "state")
    code, out, _ = run_cli(capsys, "health", "--state-dir", state)
    assert code == 0 and "healthy" in out
    # Pretend an hour passed: the source (expected every 3 x 60 s) is now silent.
    store = SqliteStateStore(state)
    with store.transaction() as tx:
        tx.beat("src", time.time() - 3600)
        tx.beat("s", time.time() - 3600)
        tx.append("s", [(b'{"id": "x"}', 0)], time.time())
    store.close()
    code, _, err = run_cli(capsys, "health", "--state-dir", state)
    assert code == 1
    assert "source src: no successful poll" in err
    assert "sink s: 1 event(s) waiting, no delivery" in err


def test_commands_without_state_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "state", "--state-dir", str(tmp_path / "none"))
    assert code == 2 and "no state" in err


def test_health_gives_a_new_instance_its_interval_before_alarming(tmp_path: Path) -> None:
    from forwarder.cli.state_commands import health_problems

    store = SqliteStateStore(str(tmp_path))
    store.register_sink("new")
    store.set_expectation("new", "sink", 60)
    store.set_expectation("src", "source", 30)
    with store.transaction() as tx:
        tx.append("new", [(b"{}", 0)], time.time())
    assert health_problems(store) == []
    later = health_problems(store, now=time.time() + 120)
    assert any(p.startswith("sink new: 1 event(s) waiting, no delivery for ever") for p in later)
    assert any(p.startswith("source src: no successful poll for ever") for p in later)
    store.close()


def test_quarantined_records_replay_after_a_normalizer_fix(tmp_path: Path) -> None:
    import orjson

    from forwarder.source import RawRecord

    out = tmp_path / "o.jsonl"
    cfg = h.config(str(tmp_path / "state"), [h.listed(count=0)], [h.recording("s", str(out))])
    good = h.make_record(7)
    broken = {k: v for k, v in h.make_record(8).items() if k != "LastUpdate"}  # the normalizer trips on it
    with Forwarder(cfg, h.make_host()) as fw:
        src = fw.sources["src"]
        batch = SourceBatch([RawRecord("test", good, None, "u1"), RawRecord("test", broken, None, "u1")])
        fw.pipeline.process("src", "listed", src, batch, "source:src")
        (q,) = fw.store.quarantined("src")
        assert "KeyError" in q.reason and q.unit == "u1" and orjson.loads(q.raw)["Id"] == "ev-0000008"
        # "Fix" the normalizer: default the missing field.
        fixed = fw.pipeline.normalizers["test"]
        fw.pipeline.normalizers["test"] = lambda d, ctx: fixed({"LastUpdate": "2026-11-01T00:00:00Z", **d}, ctx)
        counts = fw.replay_quarantine("src")
        assert (counts.read, counts.spooled, counts.quarantined) == (1, 1, 0)
        assert fw.store.quarantined("src") == []
        assert fw.deliver().ok
        assert sorted(h.read_ids(str(out))) == ["ev-0000007", "ev-0000008"]


def test_cli_quarantine_replay_through_the_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"kind": "sample", "data": {"id": "a1"}}\n{"kind": "sample", "data": {"title": "no id"}}\n')
    config = h.sample_to_file_config(tmp_path, events)
    assert main(["--config", str(config), "run", "--once"]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "dead-letters", "replay", "--source", "demo"]) == 0
    out, _ = capsys.readouterr()
    assert "1 quarantined record(s) replayed: 0 spooled" in out and "1 still failing" in out
    assert main(["--config", str(config), "dead-letters", "list", "--source", "demo"]) == 0
    out, _ = capsys.readouterr()
    assert "sample record has no id" in out
