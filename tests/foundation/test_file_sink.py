"""File sink specifics: torn tails, rotation, time patterns, permissions, failures."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import stat
from pathlib import Path

import orjson

from forwarder.schema import DlpEvent, to_json
from forwarder.sink import Entry
from forwarder.testing import sink_context
from sinks.file import FileSettings, FileSink


def entries(n: int, start: int = 1) -> list[Entry]:
    return [Entry(start + i, to_json(DlpEvent(id=f"e{start + i}", title="t" * 50))) for i in range(n)]


def sink_at(path: Path, **kw) -> FileSink:
    sink = FileSink("f", FileSettings(path=str(path), **kw), sink_context("f"))
    sink.connect()
    return sink


def lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return [orjson.loads(line) for line in data.splitlines()]


def test_files_and_directories_are_private(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "out.jsonl"
    sink = sink_at(target)
    assert sink.write_batch(entries(2)).delivered == [1, 2]
    sink.close()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700


def test_a_torn_line_is_cut_back_before_appending(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    sink = sink_at(target)
    sink.write_batch(entries(3))
    sink.close()
    with open(target, "ab") as fh:  # a crash in the middle of the next batch
        fh.write(b'{"id":"e4","title":"half')
    sink = sink_at(target)
    sink.write_batch(entries(2, start=4))
    sink.close()
    assert [r["id"] for r in lines(target)] == ["e1", "e2", "e3", "e4", "e5"]


def test_a_torn_gzip_member_is_cut_back(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    sink = sink_at(target, gzip=True)
    sink.write_batch(entries(3))
    sink.close()
    gz = tmp_path / "out.jsonl.gz"
    member = gzip.compress(b'{"id":"e4"}\n{"id":"e5"}\n')
    with open(gz, "ab") as fh:
        fh.write(member[: len(member) // 2])
    sink = sink_at(target, gzip=True)
    sink.write_batch(entries(1, start=6))
    sink.close()
    assert [r["id"] for r in lines(gz)] == ["e1", "e2", "e3", "e6"]


def test_rotation_by_size_never_splits_a_batch(tmp_path: Path) -> None:
    target = tmp_path / "dlp.jsonl"
    one = len(entries(1)[0].payload) + 1
    sink = sink_at(target, max_bytes=one * 5)
    for k in range(4):
        assert len(sink.write_batch(entries(3, start=1 + 3 * k)).delivered) == 3
    sink.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["dlp.1.jsonl", "dlp.2.jsonl", "dlp.3.jsonl", "dlp.jsonl"]
    ids = [r["id"] for f in ["dlp.1.jsonl", "dlp.2.jsonl", "dlp.3.jsonl", "dlp.jsonl"] for r in lines(tmp_path / f)]
    assert ids == [f"e{i}" for i in range(1, 13)]
    assert all(len(lines(f)) == 3 for f in files)


def test_time_pattern_starts_a_new_file(tmp_path: Path) -> None:
    sink = sink_at(tmp_path / "dlp-%Y%m%d-%H.jsonl")
    sink._now = lambda: dt.datetime(2026, 1, 1, 23, tzinfo=dt.UTC)
    sink.write_batch(entries(1))
    sink._now = lambda: dt.datetime(2026, 1, 2, 0, tzinfo=dt.UTC)
    sink.write_batch(entries(1, start=2))
    sink.close()
    assert lines(tmp_path / "dlp-20260101-23.jsonl")[0]["id"] == "e1"
    assert lines(tmp_path / "dlp-20260102-00.jsonl")[0]["id"] == "e2"


def test_an_unwritable_path_stops_the_sink_with_a_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    sink = FileSink("f", FileSettings(path=str(blocker / "out.jsonl")), sink_context("f"))
    outcome = sink.write_batch(entries(2))
    assert outcome.fatal and "cannot write" in outcome.fatal
    assert sorted(outcome.retry) == [1, 2] and not outcome.delivered
    assert not sink.health().ok


def test_an_undecodable_payload_is_rejected_and_the_rest_delivered(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    sink = sink_at(target)
    batch = [*entries(1), Entry(99, b"{not json"), *entries(1, start=2)]
    outcome = sink.write_batch(batch)
    sink.close()
    assert outcome.delivered == [1, 2] and set(outcome.rejected) == {99}
    assert [r["id"] for r in lines(target)] == ["e1", "e2"]


def test_counts_bytes_written(tmp_path: Path) -> None:
    sink = sink_at(tmp_path / "o.jsonl")
    sink.write_batch(entries(2))
    sink.close()
    assert sink.context.counters["bytes_written"] == os.path.getsize(tmp_path / "o.jsonl")


def test_the_last_file_of_an_earlier_period_is_repaired_at_start(tmp_path: Path) -> None:
    ctx = sink_context("f")
    sink = FileSink("f", FileSettings(path=str(tmp_path / "dlp-%Y%m%d.jsonl")), ctx)
    sink._now = lambda: dt.datetime(2026, 1, 1, 23, 59, tzinfo=dt.UTC)
    sink.connect()
    sink.write_batch(entries(2))
    sink.close()
    old = tmp_path / "dlp-20260101.jsonl"
    with open(old, "ab") as fh:
        fh.write(b'{"id":"e3","ti')  # crash mid-write just before midnight
    restarted = FileSink("f", FileSettings(path=str(tmp_path / "dlp-%Y%m%d.jsonl")), ctx)  # same durable state
    restarted._now = lambda: dt.datetime(2026, 1, 2, 0, 5, tzinfo=dt.UTC)
    restarted.connect()
    restarted.write_batch(entries(1, start=3))
    restarted.close()
    assert [r["id"] for r in lines(old)] == ["e1", "e2"]
    assert [r["id"] for r in lines(tmp_path / "dlp-20260102.jsonl")] == ["e3"]


def test_an_externally_rotated_file_is_reopened(tmp_path: Path) -> None:
    target = tmp_path / "dlp.jsonl"
    sink = sink_at(target)
    sink.write_batch(entries(1))
    os.rename(target, tmp_path / "dlp.jsonl-20260101")  # logrotate
    sink.write_batch(entries(1, start=2))
    sink.close()
    assert [r["id"] for r in lines(tmp_path / "dlp.jsonl-20260101")] == ["e1"]
    assert [r["id"] for r in lines(target)] == ["e2"]


def test_copytruncate_resets_the_size_used_for_rotation(tmp_path: Path) -> None:
    target = tmp_path / "dlp.jsonl"
    one = len(entries(1)[0].payload) + 1
    sink = sink_at(target, max_bytes=one * 3)
    sink.write_batch(entries(3))
    os.truncate(target, 0)  # logrotate copytruncate
    sink.write_batch(entries(2, start=4))
    sink.close()
    assert [r["id"] for r in lines(target)] == ["e4", "e5"]
    assert not (tmp_path / "dlp.1.jsonl").exists()
