"""The shared sink contract suite (forwarder.testing) run against the syslog sink and a real
rsyslogd (TCP, JSON format, so the delivered records can be read back whole)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from forwarder.sink import Entry, Outcome, Sink
from forwarder.testing import SinkContractTests
from tests.syslog.helpers import make_sink
from tests.syslog.parsers import parse_syslog
from tests.syslog.rsyslog import Rsyslog, wait_for

pytestmark = pytest.mark.rsyslog


class TestSyslogSinkContract(SinkContractTests):
    @pytest.fixture
    def sink(self, rsyslog: Rsyslog) -> Sink:
        self.server = rsyslog
        self.sent_ids: set[str] = set()
        return make_sink(
            "contract",
            host="127.0.0.1",
            port=rsyslog.tcp_port,
            transport="tcp",
            format="json",
            max_message_bytes=65000,
            confirm_seconds=0.05,
        )

    def deliver(self, sink: Sink, entries: Sequence[Entry]) -> Outcome:
        outcome = super().deliver(sink, entries)
        by_id = {e.id: e for e in entries}
        self.sent_ids.update(by_id[i].event.id for i in outcome.delivered)
        return outcome

    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(parse_syslog(line)["msg"]) for line in self.server.lines("tcp")]

    def delivered(self, sink: Sink) -> list[dict[str, Any]] | None:
        wait_for(
            lambda: self.sent_ids <= {str(r.get("id")) for r in self.records()},
            timeout=20,
            what="rsyslog to write every delivered event",
        )
        return self.records()
