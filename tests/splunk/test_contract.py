"""The splunk_hec sink passes the shared sink contract kit, with and without indexer acks."""

from __future__ import annotations

from typing import Any

import pytest

from emulators.hec.app import DEFAULT_TOKEN, HecApp, TokenConfig
from emulators.httpd import EmulatorServer
from forwarder.settings import HttpSettings, Secret
from forwarder.sink import Sink
from forwarder.testing import SinkContractTests, sink_context
from sinks.splunk_hec.sink import HecSink, SplunkHecSettings


class _HecContract(SinkContractTests):
    use_ack = False

    @pytest.fixture
    def sink(self, tmp_path):
        app = HecApp({DEFAULT_TOKEN: TokenConfig(use_ack=self.use_ack)}, ack_delay=0.05 if self.use_ack else 0.0)
        server = EmulatorServer(app, cert_dir=tmp_path / "certs").start()
        settings = SplunkHecSettings(
            url=server.url,
            token=Secret(DEFAULT_TOKEN),
            ack=self.use_ack,
            ack_poll_interval=0.05,
            http=HttpSettings(ca_bundle=server.ca_file),
        )
        sink = HecSink("splunk", settings, sink_context("splunk"))
        sink.emulator = app  # type: ignore[attr-defined]
        yield sink
        sink.close()
        server.stop()

    def delivered(self, sink: Sink) -> list[dict[str, Any]] | None:
        app: HecApp = sink.emulator  # type: ignore[attr-defined]
        return [event["dlpfwd"] for event in app.events()]


class TestHecSinkContract(_HecContract):
    use_ack = False


class TestHecSinkContractWithAcks(_HecContract):
    use_ack = True
