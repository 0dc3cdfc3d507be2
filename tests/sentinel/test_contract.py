"""The sentinel sink passes the sink contract kit against the Logs Ingestion emulator."""

from __future__ import annotations

from typing import Any

import pytest

from forwarder.sink import Sink
from forwarder.testing import SinkContractTests, sink_context
from sinks.sentinel.columns import STREAM
from tests.sentinel.helpers import make_sink


class TestSentinelSink(SinkContractTests):
    @pytest.fixture
    def sink(self, emulator, tokens) -> Sink:
        self.app = emulator.app
        sink = make_sink(emulator.url, emulator.ca_file, tokens)
        sink.context = sink_context("sentinel")
        return sink

    def delivered(self, sink: Sink) -> list[dict[str, Any]]:
        return self.app.all_rows(STREAM)

    def delivered_ids(self, records: list[dict[str, Any]]) -> set[str]:
        return {str(r.get("EventId")) for r in records}
