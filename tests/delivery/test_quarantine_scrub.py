"""Quarantined records keep no matched sensitive value; `dead-letters list` prints no record bytes
unless asked (``--show-raw``)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from forwarder.cli import main
from forwarder.runtime import Forwarder
from forwarder.source import RawRecord, SourceBatch
from tests.delivery import helpers as h

CARD = "4111111111111111"
UNPARSEABLE_MARK = "opaque-not-json-7a1b"


def broken_record() -> dict[str, object]:
    """Parses, but the test normalizer trips on it (no LastUpdate); it carries a detection."""
    record = {k: v for k, v in h.make_record(8).items() if k not in ("LastUpdate", "Value")}
    record["PolicyDetails"] = [
        {
            "Rules": [
                {
                    "ConditionsMatched": {
                        "SensitiveInformation": [
                            {
                                "SensitiveInformationTypeName": "Credit Card Number",
                                "SensitiveInformationDetections": {
                                    "DetectedValues": [
                                        {"Name": "Credit Card Number", "Value": CARD, "Context": f"card {CARD} in mail"}
                                    ]
                                },
                            }
                        ]
                    }
                }
            ]
        }
    ]
    return record


def state_bytes(state: Path) -> bytes:
    return b"".join(p.read_bytes() for p in state.iterdir() if p.is_file())


def test_quarantined_records_are_scrubbed_and_listed_without_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    cfg = h.config(str(state), [h.listed(count=0)], [h.recording("s", str(tmp_path / "o.jsonl"))])
    with Forwarder(cfg, h.make_host()) as fw:
        batch = SourceBatch(
            [
                RawRecord("test", broken_record(), None, "u1"),
                RawRecord("test", None, f"{{not json {UNPARSEABLE_MARK}".encode(), "u1"),
            ]
        )
        counts = fw.pipeline.process("src", "listed", fw.sources["src"], batch, "source:src")
        assert counts.quarantined == 2
        parsed, opaque = fw.store.quarantined("src")
        kept = orjson.loads(parsed.raw)
        assert kept["Id"] == "ev-0000008" and "KeyError" in parsed.reason  # still useful to diagnose
        assert CARD.encode() not in parsed.raw
        assert UNPARSEABLE_MARK.encode() in opaque.raw  # not JSON: stored as received (documented)
    assert CARD.encode() not in state_bytes(state)

    code = main(["--config", "/nonexistent.toml", "dead-letters", "list", "--source", "src", "--state-dir", str(state)])
    out, _ = capsys.readouterr()
    assert code == 0
    assert CARD not in out and UNPARSEABLE_MARK not in out and "not json" not in out
    assert "bytes, sha256 " in out and "record is not valid JSON" in out
    args = ["dead-letters", "list", "--source", "src", "--state-dir", str(state), "--show-raw"]
    assert main(["--config", "/nonexistent.toml", *args]) == 0
    out, _ = capsys.readouterr()
    assert UNPARSEABLE_MARK in out and CARD not in out


def test_a_normalizer_error_quoting_a_matched_value_is_scrubbed(tmp_path: Path) -> None:
    cfg = h.config(str(tmp_path / "state"), [h.listed(count=0)], [h.recording("s", str(tmp_path / "o.jsonl"))])
    with Forwarder(cfg, h.make_host()) as fw:

        def strict(data: dict[str, object], ctx: object) -> list[object]:
            raise ValueError(f"invalid literal for int() with base 10: {CARD!r} (record {data['Id']})")

        fw.pipeline.normalizers["test"] = strict
        batch = SourceBatch([RawRecord("test", broken_record(), None, "u1")])
        fw.pipeline.process("src", "listed", fw.sources["src"], batch, "source:src")
        (q,) = fw.store.quarantined("src")
        assert CARD not in q.reason and "ValueError: invalid literal" in q.reason and "ev-0000008" in q.reason
    assert CARD.encode() not in state_bytes(tmp_path / "state")
