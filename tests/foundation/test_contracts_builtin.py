"""The built-in file sink, sample source and sample normalizer pass the contract test kit."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder.schema import to_dict
from forwarder.sink import Sink
from forwarder.testing import (
    NormalizerContractTests,
    SinkContractTests,
    SourceContractTests,
    sample_events,
    sink_context,
    source_context,
)
from sinks.file import FileSettings, FileSink
from sources.sample import SampleSettings, SampleSource, normalize_sample


def _read_lines(directory: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        records.extend(orjson.loads(line) for line in data.splitlines() if line)
    return records


class TestFileSinkNative(SinkContractTests):
    @pytest.fixture
    def sink(self, tmp_path: Path) -> FileSink:
        self.directory = tmp_path / "out"
        settings = FileSettings(path=str(self.directory / "dlp-%Y%m%d.jsonl"), max_bytes=200_000)
        return FileSink("file", settings, sink_context("file"))

    def delivered(self, sink: Sink) -> list[dict[str, Any]]:
        return _read_lines(self.directory)


class TestFileSinkOcsfGzip(SinkContractTests):
    @pytest.fixture
    def sink(self, tmp_path: Path) -> FileSink:
        self.directory = tmp_path / "ocsf"
        settings = FileSettings(path=str(self.directory / "dlp.ocsf.jsonl"), layout="ocsf", gzip=True)
        return FileSink("ocsf", settings, sink_context("ocsf"))

    def delivered(self, sink: Sink) -> list[dict[str, Any]]:
        return _read_lines(self.directory)

    def delivered_ids(self, records: list[dict[str, Any]]) -> set[str]:
        return {r["finding_info"]["uid"] for r in records}


class TestSampleSource(SourceContractTests):
    @pytest.fixture
    def source(self, tmp_path: Path) -> SampleSource:
        path = tmp_path / "records.jsonl"
        lines = [orjson.dumps({"kind": "sample", "data": to_dict(e)}) for e in sample_events()]
        path.write_bytes(b"\n".join(lines) + b"\n")
        return SampleSource("sample", SampleSettings(path=str(path), batch_size=4), source_context("sample"))


class TestSampleNormalizer(NormalizerContractTests):
    @pytest.fixture
    def normalizer(self) -> Any:
        return normalize_sample

    @pytest.fixture
    def records(self) -> list[dict[str, Any]]:
        return [to_dict(e) for e in sample_events()]
