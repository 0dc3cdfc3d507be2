"""A record is normalized all or nothing: a normalizer that yields some events and then raises
has its record quarantined, and none of that record's events reach any spool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from forwarder.runtime import Forwarder
from forwarder.schema import DlpEvent
from forwarder.source import NormalizeContext, RawRecord, SourceBatch
from tests.delivery import helpers as h


def test_a_normalizer_failing_midway_spools_none_of_the_records_events(tmp_path: Path) -> None:
    cfg = h.config(str(tmp_path / "state"), [h.listed(count=0)], [h.recording("s", str(tmp_path / "o.jsonl"))])
    with Forwarder(cfg, h.make_host()) as fw:

        def half(data: dict[str, object], ctx: NormalizeContext) -> Iterator[DlpEvent]:
            for part in ("a", "b"):
                yield DlpEvent(id=f"{data['Id']}-{part}", idempotency_key=f"{data['Id']}-{part}")
            if data["Id"] == "ev-0000002":
                raise ValueError("the third part cannot be read")
            yield DlpEvent(id=f"{data['Id']}-c", idempotency_key=f"{data['Id']}-c")

        fw.pipeline.normalizers["test"] = half
        records = [RawRecord("test", h.make_record(i), None, "u1") for i in (1, 2, 3)]
        counts = fw.pipeline.process("src", "listed", fw.sources["src"], SourceBatch(records), "source:src")
        assert counts.quarantined == 1 and counts.normalized == 6 and counts.spooled == 6
        spooled = [r.data["id"] for r in fw.store.read_spool("s", 0, 100)]
        assert spooled == [f"ev-000000{i}-{p}" for i in (1, 3) for p in "abc"]
        (q,) = fw.store.quarantined("src")
        assert "ValueError: the third part cannot be read" in q.reason
        (unit,) = [u for u in fw.store.ledger(0) if u.unit == "u1"]
        assert (unit.spooled, unit.quarantined) == (6, 1)
