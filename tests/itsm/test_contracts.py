"""Both ITSM sinks pass the host's sink contract suite (forwarder.testing)."""

from __future__ import annotations

import re

import orjson
import pytest

from emulators.httpd import App, Request, Response
from emulators.servicenow.app import ServiceNowApp
from forwarder.settings import build
from forwarder.testing import SinkContractTests, sink_context
from sinks.servicenow.sink import ServiceNowSink
from sinks.webhook.settings import WebhookSettings
from sinks.webhook.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from sinks.webhook.sink import WebhookSink

from .conftest import sn_settings

_EVENT = re.compile(r"\(event (.*)\)\s*$", re.DOTALL)


class TestServiceNowSinkContract(SinkContractTests):
    @pytest.fixture
    def sink(self, mount):
        self.app = ServiceNowApp(users={"dlpfwd": "pa55word"})
        server = mount(self.app)
        return ServiceNowSink("sn", sn_settings(server, group_by="event"), sink_context("sn"))

    def delivered(self, sink):
        return self.app.table("incident")

    def delivered_ids(self, records):
        ids = set()
        for record in records:
            m = _EVENT.search(record.get("description", ""))
            if m:
                ids.add(m.group(1))
        return ids


class _Collector(App):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.items: list[dict] = []
        self.route("POST", "/hook", self.hook)

    def hook(self, request: Request) -> Response:
        verify_signature(request.body, request.header(TIMESTAMP_HEADER), request.header(SIGNATURE_HEADER), self.key)
        body = orjson.loads(request.body)
        self.items.extend(body if isinstance(body, list) else [body])
        return Response.empty(200)


@pytest.fixture(params=["event", "array"])
def webhook_mode(request):
    return request.param


class TestWebhookSinkContract(SinkContractTests):
    @pytest.fixture
    def sink(self, mount, webhook_mode):
        self.collector = _Collector("k3y")
        server = mount(self.collector)
        problems: list[str] = []
        data = {"url": f"{server.url}/hook", "secret": "k3y", "mode": webhook_mode}
        settings = build(WebhookSettings, {**data, "http": {"ca_bundle": server.ca_file}}, "sinks.hook", problems)
        assert not problems
        return WebhookSink("hook", settings, sink_context("hook"))

    def delivered(self, sink):
        return self.collector.items
