"""Matched sensitive values never reach the index, the enrichment or a write-back comment, and
an index failure never blocks or loses a batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder.correlation.index import DB_NAME, CorrelationIndex
from forwarder.correlation.stage import CorrelationStage
from forwarder.correlation.writeback import WriteBack, comment_text
from forwarder.schema import DetectedValue, PolicyMatch, RuleMatch, SensitiveType, to_json
from tests.correlation.helpers import alert, dlp, settings

SECRET = "4111111111111111"


def _dlp_with_value() -> Any:
    return dlp(
        "r1",
        "alice@contoso.com",
        0,
        policies=[PolicyMatch(name="PCI", rules=[RuleMatch(name="Cards high")])],
        sensitive_types=[SensitiveType(name="Credit Card Number", detected_values=[DetectedValue("cc", SECRET)])],
    )


def test_no_matched_value_in_index_enrichment_or_comment(tmp_path: Path) -> None:
    s = settings(writeback_sources=["graph"])
    stage = CorrelationStage(str(tmp_path), s)
    a = alert("a1", "alice@contoso.com", 5, incident="7", source="graph")
    stage.process([(_dlp_with_value(), "u")], "o365", "management_activity", "t1")
    out, _, withheld = stage.process([(a, "u")], "graph", "graph_security", "t1")  # forward_alerts off
    assert withheld == 1  # the alert was indexed, not forwarded, and counted
    stage.close()
    (corr,) = [e for e, _ in out]
    assert corr.kind == "correlation" and SECRET not in to_json(corr).decode()
    assert SECRET.encode() not in (tmp_path / DB_NAME).read_bytes()
    queue = WriteBack(str(tmp_path), ["graph"], "tag")
    (due,) = queue.due()
    text = comment_text(due)
    queue.close()
    assert SECRET not in text
    assert "Credit Card Number" in text and "PCI" in text and "Cards high" in text


def test_index_failure_flags_and_keeps_the_batch(tmp_path: Path, monkeypatch: Any) -> None:
    stage = CorrelationStage(str(tmp_path), settings())

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(CorrelationIndex, "index_batch", broken)
    events = [(dlp("r1", "alice@contoso.com", 0), "u"), (dlp("r2", "bob@contoso.com", 0), "u")]
    out, pairs, _ = stage.process(events, "src", "management_activity", "t1")
    stage.close()
    assert [e.id for e, _ in out] == ["r1", "r2"] and pairs == []
    for ev, _ in out:
        assert ev.enrichment["errors"] == {"correlation": "index failed: OSError"}
        assert "correlation" not in {k for k in ev.enrichment if k != "errors"}
    assert orjson.loads(to_json(out[0][0]))["enrichment"]["errors"]["correlation"].startswith("index failed")


@pytest.mark.parametrize("forward", [False, True])
def test_non_dlp_alerts_forwarded_only_when_asked(tmp_path: Path, forward: bool) -> None:
    stage = CorrelationStage(str(tmp_path), settings(forward_alerts=forward))
    out, _, _ = stage.process(
        [(dlp("r1", "alice@contoso.com", 0), "u"), (alert("a1", "alice@contoso.com", 1), "u")], "s", "t", "t1"
    )
    stage.close()
    assert [e.id for e, _ in out] == (["r1", "alert:a1"] if forward else ["r1"])
