"""The file sink writes spooled payloads as they are (no decode) only when each is one line
holding one JSON object; anything else is re-encoded onto one line or rejected."""

from __future__ import annotations

from pathlib import Path

import orjson

from forwarder.sink import Entry
from forwarder.testing import sink_context
from sinks.file import FileSettings, FileSink


def write(tmp_path: Path, batch: list[Entry]) -> tuple[list[bytes], dict[int, str], list[int]]:
    target = tmp_path / "out.jsonl"
    sink = FileSink("f", FileSettings(path=str(target)), sink_context("f"))
    sink.connect()
    outcome = sink.write_batch(batch)
    sink.close()
    return target.read_bytes().split(b"\n"), outcome.rejected, outcome.delivered


def test_payloads_are_written_byte_for_byte_one_per_line(tmp_path: Path) -> None:
    payloads = [orjson.dumps({"id": f"e{i}", "title": "line\nbreak escaped by orjson"}) for i in range(3)]
    lines, rejected, delivered = write(tmp_path, [Entry(i, p) for i, p in enumerate(payloads)])
    assert lines == [*payloads, b""] and not rejected and delivered == [0, 1, 2]


def test_a_payload_spanning_lines_is_put_on_one_line(tmp_path: Path) -> None:
    lines, rejected, delivered = write(tmp_path, [Entry(1, b'{"id": "e1"}'), Entry(2, b'{"id":\n "e2"}\n')])
    assert lines == [b'{"id": "e1"}', b'{"id":"e2"}', b""] and delivered == [1, 2] and not rejected


def test_payloads_that_are_not_json_are_rejected_alone(tmp_path: Path) -> None:
    batch = [Entry(1, b'{"id":"e1"}'), Entry(2, b""), Entry(3, b'{"id":"e3"'), Entry(4, b"{broken\n}"), Entry(5, b"{}")]
    lines, rejected, delivered = write(tmp_path, batch)
    assert lines == [b'{"id":"e1"}', b"{}", b""]
    assert delivered == [1, 5] and set(rejected) == {2, 3, 4}
