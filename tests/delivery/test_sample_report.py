"""`dlpfwd report` counts line up for a sample run: one ledger unit per batch, and the records'
units are those the batches report (not one unit per record)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forwarder.cli import main
from forwarder.state.sqlite import SqliteStateStore
from tests.delivery import helpers as h


def test_report_counts_for_a_sample_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    lines = [json.dumps({"kind": "sample", "data": {"id": f"e{i}", "title": "t"}}) for i in range(7)]
    events.write_text("\n".join(lines) + "\n")
    state = tmp_path / "state"
    config = h.sample_to_file_config(tmp_path, events, "batch_size = 3")
    assert main(["--config", str(config), "run", "--once"]) == 0
    capsys.readouterr()

    store = SqliteStateStore(str(state))
    rows = list(store.ledger(0))
    store.close()
    assert len(rows) == 3  # batches of 3, 3 and 1
    assert sorted((r.listed, r.fetched, r.parsed, r.spooled) for r in rows) == [
        (1, 1, 1, 1),
        (3, 3, 3, 3),
        (3, 3, 3, 3),
    ]
    assert all(r.sinks["archive"]["delivered"] == r.spooled for r in rows)

    assert main(["--config", str(config), "report", "--since", "1d", "--json"]) == 0
    report = json.loads(capsys.readouterr()[0])
    demo = report["sources"]["demo"]
    assert report["complete"] is True
    assert (demo["units"], demo["listed"], demo["fetched"], demo["parsed"], demo["spooled"]) == (3, 7, 7, 7, 7)
    assert demo["sinks"]["archive"]["delivered"] == 7 and demo["sinks"]["archive"]["pending"] == 0
