"""HecSink against the HEC emulator over TLS: delivery, acks, splits, isolation, failover, faults."""

from __future__ import annotations

import gzip
import time

import orjson
import pytest

from emulators.hec.app import DEFAULT_TOKEN, HecApp, TokenConfig
from emulators.httpd import EmulatorServer, Request, Response
from forwarder.errors import FatalError
from forwarder.sink import Outcome
from tests.splunk.conftest import entries


def settle(sink, outcome: Outcome, deadline: float = 10.0) -> Outcome:
    """Poll acks until nothing is pending, a fatal fault, or the deadline; merged outcome."""
    total = Outcome(
        delivered=list(outcome.delivered),
        rejected=dict(outcome.rejected),
        retry=list(outcome.retry),
        fatal=outcome.fatal,
        retry_reason=outcome.retry_reason,
        duplicates_possible=outcome.duplicates_possible,
    )
    waiting = set(outcome.pending)
    end = time.monotonic() + deadline
    while waiting and time.monotonic() < end and not total.fatal:
        polled = sink.poll_acks()
        waiting -= set(polled.delivered) | set(polled.retry) | set(polled.rejected)
        polled.pending = []
        total.merge(polled)
        if waiting:
            time.sleep(0.01)
    total.pending = sorted(waiting)
    return total


def wait_sent(sink, n: int, deadline: float = 10.0) -> None:
    """Wait until background sends put ``n`` entries under acknowledgement."""
    end = time.monotonic() + deadline
    while sink.acks.count() < n and time.monotonic() < end:
        time.sleep(0.01)
    assert sink.acks.count() == n


def keys(app: HecApp) -> list[str]:
    return [e["dlpfwd"]["idempotency_key"] for e in app.events()]


def test_delivers_without_ack_on_200_code_0(hec, make_sink):
    app, server = hec
    sink = make_sink(server, index="dlp")
    batch = entries(25)
    out = sink.write_batch(batch)
    assert sorted(out.delivered) == [e.id for e in batch]
    assert not out.pending and not out.retry and not out.rejected
    assert keys(app) == [f"rec-{i}@2026-11-23T10:00:00Z" for i in range(25)]
    assert {item["index"] for item in app.indexed} == {"dlp"}
    assert {item["sourcetype"] for item in app.indexed} == {"dlpfwd:purview:audit"}
    assert app.requests == 1


def test_sends_gzip_with_the_splunk_authorization_header(tmp_path, make_sink):
    seen: list[Request] = []
    app = HecApp()
    original = app.event

    def spy(request: Request) -> Response:
        seen.append(request)
        return original(request)

    app.routes = [(m, p, spy if h == original else h) for m, p, h in app.routes]
    with EmulatorServer(app, cert_dir=tmp_path / "c") as server:
        sink = make_sink(server)
        assert sink.write_batch(entries(3)).delivered
    (request,) = seen
    assert request.header("authorization") == f"Splunk {DEFAULT_TOKEN}"
    assert request.header("content-encoding") == "gzip"
    lines = gzip.decompress(request.body).split(b"\n")
    assert len(lines) == 3 and all(orjson.loads(line)["event"]["dlpfwd"] for line in lines)
    assert not request.header("x-splunk-request-channel")  # channels only with acknowledgement


def test_ack_mode_reports_pending_then_delivered(hec_ack, make_sink):
    app, server = hec_ack
    app.ack_delay = 0.3
    sink = make_sink(server, ack=True, max_request_bytes=20_000)
    batch = entries(40)
    out = sink.write_batch(batch)
    assert not out.delivered
    assert sorted(out.pending) == [e.id for e in batch]
    assert app.requests > 1  # several requests, each with its own ackId
    first = sink.poll_acks()
    assert not first.delivered  # acks not yet true
    done = settle(sink, out)
    assert sorted(done.delivered) == [e.id for e in batch]
    assert done.duplicates_possible == 0
    assert len(app.indexed) == 40


def test_ack_timeout_resends_with_duplicates_counted(hec_ack, make_sink):
    app, server = hec_ack
    app.drop_acks = True
    sink = make_sink(server, ack=True, ack_timeout=0.2)
    batch = entries(5)
    out = sink.write_batch(batch)
    assert sorted(out.pending) == [e.id for e in batch]
    done = settle(sink, out)
    assert sorted(done.retry) == [e.id for e in batch]
    assert done.duplicates_possible == 5
    assert "acknowledgement" in done.retry_reason
    app.drop_acks = False
    again = settle(sink, sink.write_batch(batch))
    assert sorted(again.delivered) == [e.id for e in batch]
    assert len(app.indexed) == 10  # the re-send duplicated: visible by idempotency key
    assert len(set(keys(app))) == 5


def test_413_splits_and_an_oversized_event_is_rejected_alone(tmp_path, make_sink):
    app = HecApp(max_content_length=6_000)
    with EmulatorServer(app, cert_dir=tmp_path / "c") as server:
        sink = make_sink(server, gzip=False)
        batch = entries(6)
        big = entries(1, start=100, description="x" * 8_000)
        out = sink.write_batch(batch + big)
    assert sorted(out.delivered) == [e.id for e in batch]
    assert list(out.rejected) == [big[0].id]
    assert "over the HEC's limit" in out.rejected[big[0].id]
    assert len(app.indexed) == 6
    assert sink.counters.values.get("hec_splits", 0) >= 1


def test_event_over_max_request_bytes_is_rejected_locally(hec, make_sink):
    app, server = hec
    sink = make_sink(server, max_request_bytes=4_000)
    big = entries(1, start=50, description="y" * 5_000)
    out = sink.write_batch(entries(2) + big)
    assert big[0].id in out.rejected and "max_request_bytes" in out.rejected[big[0].id]
    assert len(out.delivered) == 2


def _poison(sink, bad_ids: set[int]):
    """Make the envelope of some entries something Splunk refuses (blank event, code 13)."""
    envelope = sink.envelopes.envelope

    def wrapped(payload):
        if orjson.loads(payload)["id"] in {f"rec-{i - 1}" for i in bad_ids}:
            return b'{"event":"","sourcetype":"x"}'
        return envelope(payload)

    sink.envelopes.envelope = wrapped


@pytest.mark.parametrize("report_number", [True, False])
def test_a_bad_event_is_isolated_and_the_rest_delivered(hec, make_sink, report_number):
    app, server = hec
    app.report_event_number = report_number
    sink = make_sink(server)
    batch = entries(10)
    _poison(sink, {batch[6].id})
    out = sink.write_batch(batch)
    assert list(out.rejected) == [batch[6].id]
    assert "code 13" in out.rejected[batch[6].id]
    assert sorted(out.delivered) == sorted(e.id for e in batch if e.id != batch[6].id)
    indexed = keys(app)
    assert len(set(indexed)) == 9
    if report_number:
        assert len(indexed) == 9  # invalid-event-number: nothing re-sent
        assert out.duplicates_possible == 0
    else:
        assert out.duplicates_possible > 0  # bisecting re-sends what HEC indexed before the refusal


@pytest.mark.parametrize("in_flight", [0, 2])
def test_a_bad_event_with_acks_resends_the_head_under_ack(hec_ack, make_sink, in_flight):
    app, server = hec_ack
    sink = make_sink(server, ack=True, max_in_flight=in_flight)
    batch = entries(6)
    _poison(sink, {batch[3].id})
    done = settle(sink, sink.write_batch(batch))
    assert list(done.rejected) == [batch[3].id]
    assert done.duplicates_possible == 3
    assert sorted(done.delivered) == sorted(e.id for e in batch if e.id != batch[3].id)
    assert len(app.indexed) == 5 + 3  # the head was indexed before the refusal, then re-sent under ack


def test_busy_fails_over_to_the_next_endpoint(tmp_path, make_sink):
    busy, calm = HecApp(), HecApp()
    busy.busy_next = 100
    with EmulatorServer(busy, cert_dir=tmp_path / "c") as s1, EmulatorServer(calm, cert_dir=tmp_path / "c") as s2:
        sink = make_sink(s1, urls=[s1.url, s2.url], balance="failover")
        out = sink.write_batch(entries(4))
        assert len(out.delivered) == 4
        assert len(calm.indexed) == 4 and not busy.indexed
        # the busy endpoint now rests: the next request goes straight to the calm one
        requests_before = busy.requests
        sink.write_batch(entries(2, start=10))
        assert busy.requests == requests_before


def test_round_robin_spreads_requests(tmp_path, make_sink):
    a, b = HecApp(), HecApp()
    with EmulatorServer(a, cert_dir=tmp_path / "c") as s1, EmulatorServer(b, cert_dir=tmp_path / "c") as s2:
        sink = make_sink(s1, urls=[s1.url, s2.url])
        for i in range(4):
            assert sink.write_batch(entries(1, start=i)).delivered
    assert len(a.indexed) == 2 and len(b.indexed) == 2


def test_unreachable_endpoint_fails_over_then_retries_when_all_down(hec, make_sink):
    app, server = hec
    dead = "https://127.0.0.1:9"  # discard port: nothing listens
    sink = make_sink(server, urls=[dead, server.url], balance="failover")
    assert len(sink.write_batch(entries(2)).delivered) == 2
    lonely = make_sink(server, urls=[dead])
    out = lonely.write_batch(entries(2))
    assert sorted(out.retry) == [1, 2] and not out.fatal
    assert "127.0.0.1:9" in out.retry_reason


def test_busy_single_endpoint_means_retry_not_loss(hec, make_sink):
    app, server = hec
    app.busy_next = 1
    sink = make_sink(server)
    out = sink.write_batch(entries(3))
    assert sorted(out.retry) == [1, 2, 3]
    assert "code 9" in out.retry_reason
    assert sorted(sink.write_batch(entries(3)).delivered) == [1, 2, 3]


@pytest.mark.parametrize(
    ("token_config", "settings", "expected"),
    [
        (TokenConfig(disabled=True), {}, ["code 1", "sinks.splunk.token"]),
        (TokenConfig(indexes=["main"]), {"index": "secret"}, ["code 7", "sinks.splunk.index"]),
        (TokenConfig(use_ack=True), {}, ["code 10", "sinks.splunk.ack = true"]),
        (TokenConfig(), {"ack": True}, ["without an ackId", "useACK"]),
    ],
)
def test_configuration_faults_stop_the_sink(tmp_path, make_sink, token_config, settings, expected):
    app = HecApp({DEFAULT_TOKEN: token_config})
    with EmulatorServer(app, cert_dir=tmp_path / "c") as server:
        sink = make_sink(server, **settings)
        out = settle(sink, sink.write_batch(entries(3)))
    assert out.fatal and all(text in out.fatal for text in expected), out.fatal
    assert DEFAULT_TOKEN not in out.fatal
    assert sorted(out.retry) == [1, 2, 3]  # kept in the spool
    assert not out.delivered


def test_unknown_token_is_fatal_and_never_echoed(hec, make_sink):
    app, server = hec
    secret = "11111111-2222-4333-8444-555555555555"
    out = make_sink(server, token=secret).write_batch(entries(1))
    assert "code 4" in out.fatal and secret not in out.fatal


def test_ack_disabled_on_poll_is_fatal(hec_ack, make_sink):
    app, server = hec_ack
    sink = make_sink(server, ack=True)
    out = sink.write_batch(entries(2))
    assert out.pending
    wait_sent(sink, 2)
    app.tokens[DEFAULT_TOKEN].use_ack = False
    polled = sink.poll_acks()
    assert polled.fatal and "code 14" in polled.fatal


def test_health_checks_endpoint_token_ack_and_index(hec_ack, make_sink):
    app, server = hec_ack
    health = make_sink(server, ack=True, index="dlp").health()
    assert health.ok, health.checks
    names = [c.name for c in health.checks]
    assert any("authentication" in n for n in names) and any("index dlp" in n for n in names)
    assert not app.indexed  # the probes index nothing
    bad = make_sink(server, ack=True, index="nope", index_by_kind={"alert": "dlp"}).health()
    failing = [c for c in bad.checks if not c.ok]
    assert [c.name.split()[-1] for c in failing] == ["nope"]
    assert "code 7" in failing[0].detail


def test_health_reports_bad_token_and_disabled_ack(hec, make_sink):
    app, server = hec
    health = make_sink(server, token="11111111-2222-4333-8444-555555555555").health()
    assert not health.ok and any("code 4" in c.detail for c in health.checks)
    health = make_sink(server, ack=True).health()
    failing = [c for c in health.checks if not c.ok]
    assert failing and "code 14" in failing[0].detail
    down = make_sink(server, url="https://127.0.0.1:9").health()
    assert not down.ok and "reachable" in down.checks[0].name


def test_a_forgotten_channel_means_resend_on_a_new_channel(hec_ack, make_sink):
    app, server = hec_ack
    app.ack_delay = 60  # the acks will not come before the channel is gone
    sink = make_sink(server, ack=True)
    batch = entries(4)
    out = sink.write_batch(batch)
    wait_sent(sink, 4)
    old_channel = sink.pool.endpoints[0].channel
    app.forget_channels()
    lost = settle(sink, out)
    assert sorted(lost.retry) == [e.id for e in batch]
    assert lost.duplicates_possible == 4 and "channel" in lost.retry_reason
    assert sink.pool.endpoints[0].channel != old_channel
    app.ack_delay = 0
    again = settle(sink, sink.write_batch(batch))
    assert sorted(again.delivered) == [e.id for e in batch]
    assert {i["_channel"] for i in app.indexed} == {old_channel, sink.pool.endpoints[0].channel}


def test_a_fatal_background_send_stops_the_next_batch(hec_ack, make_sink):
    app, server = hec_ack
    sink = make_sink(server, ack=True)
    app.tokens[DEFAULT_TOKEN].disabled = True
    first = sink.write_batch(entries(2))
    assert sorted(first.pending) == [1, 2]  # handed to a background sender
    deadline = time.monotonic() + 10
    while any(not f.done() for f, _ in sink._inflight) and time.monotonic() < deadline:
        time.sleep(0.01)
    second = sink.write_batch(entries(2, start=5))
    assert second.fatal and "code 1" in second.fatal and sorted(second.retry) == [6, 7]
    polled = sink.poll_acks()
    assert polled.fatal and sorted(polled.retry) == [1, 2]


def test_capacity_warnings_are_accepted_not_resent(hec, make_sink, caplog):
    app, server = hec
    app.capacity_warning = 24
    sink = make_sink(server)
    out = sink.write_batch(entries(3))
    assert sorted(out.delivered) == [1, 2, 3] and not out.retry
    assert len(app.indexed) == 3
    assert sink.counters.values["hec_capacity_warnings"] == 1
    assert "code 24" in caplog.text and "nearing capacity" in caplog.text


def test_an_unknown_event_kind_in_a_per_kind_setting_is_a_configuration_fault(hec, make_sink):
    app, server = hec
    sink = make_sink(server, sourcetype_by_kind={"alerts": "x"})
    with pytest.raises(FatalError, match=r"sinks\.splunk\.sourcetype_by_kind\.alerts: unknown event kind"):
        sink.connect()


def test_a_configuration_fault_while_splitting_stops_sending_the_rest(tmp_path, make_sink):
    class SplitThenRefuse(HecApp):
        def event(self, request: Request) -> Response:
            self.requests += 1
            if request.body.count(b"\n") > 0:
                return Response.json({"text": "Content-Length too large", "code": 413}, 413)
            return Response.json({"text": "Invalid token", "code": 4}, 403)

    app = SplitThenRefuse()  # HecApp routes the event endpoints to self.event: the override
    with EmulatorServer(app, cert_dir=tmp_path / "c") as server:
        out = make_sink(server, gzip=False).write_batch(entries(4))
    assert out.fatal and "code 4" in out.fatal
    assert sorted(out.retry) == [1, 2, 3, 4] and not out.delivered and not out.rejected
    assert app.requests == 3  # 4 events (413), 2 events (413), 1 event (403): then nothing more


def test_a_channel_refused_again_and_again_becomes_a_configuration_fault(tmp_path, make_sink):
    class RefuseChannels(HecApp):
        def event(self, request: Request) -> Response:
            self.requests += 1
            self.seen = getattr(self, "seen", set()) | {request.header("x-splunk-request-channel")}
            return Response.json({"text": "Invalid data channel", "code": 11}, 400)

    app = RefuseChannels()
    with EmulatorServer(app, cert_dir=tmp_path / "c") as server:
        sink = make_sink(server, ack=True, max_in_flight=0)
        first = sink.write_batch(entries(2))
        assert sorted(first.retry) == [1, 2] and not first.fatal and "new channel" in first.retry_reason
        sink.write_batch(entries(2))
        third = sink.write_batch(entries(2))
    assert third.fatal and "code 11" in third.fatal and "sinks.splunk.ack" in third.fatal
    assert len(app.seen) == 3  # a fresh channel each time
