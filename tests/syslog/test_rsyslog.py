"""The syslog sink against a real rsyslogd (Debian package): UDP, TCP with both framings, TLS
(RFC 5425, generated CA, also mutual TLS), every received message parsed back field by field
by the independent parsers; and an rsyslog restart in the middle of a run."""

from __future__ import annotations

import itertools
import ssl
import threading

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.errors import FatalError, NotConnected
from forwarder.schema import from_dict
from sinks.syslog.truncate import MARKER
from tests.syslog.certs import Pki
from tests.syslog.expected import SYSLOG_SEV, cef_expected, leef_expected
from tests.syslog.helpers import drive, entries_for, make_sink, sample_event
from tests.syslog.parsers import parse_cef, parse_leef, parse_syslog
from tests.syslog.rsyslog import Rsyslog, wait_for

pytestmark = pytest.mark.rsyslog

FAST = {"confirm_seconds": 0.05, "reconnect_initial": 0.05, "reconnect_max": 0.5}


def settings_for(server: Rsyslog, pki: Pki, transport: str, **extra):
    port = {"udp": server.udp_port, "tcp": server.tcp_port, "tls": server.tls_port}[transport]
    base = {"host": "127.0.0.1", "port": port, "transport": transport, "hostname": "dlpfwd-test", **FAST}
    if transport == "tls":
        base["tls"] = {"ca_bundle": str(pki.ca)}
    base.update(extra)
    return base


def received(server: Rsyslog, log: str, run: str, count: int, timeout: float = 20.0) -> list[str]:
    """The messages of this test run (ids contain ``run``), once ``count`` have arrived."""
    mine = lambda: [line for line in server.lines(log) if f"audit:{run}-" in line]  # noqa: E731
    wait_for(lambda: len(mine()) >= count, timeout=timeout, what=f"{count} messages of {run} on {log}")
    return mine()


def check_line(line: str, fmt: str, by_id: dict, header: str = "rfc5424") -> str:
    """Parse one received message and compare it with its event; returns the event id."""
    fields = parse_syslog(line)
    assert fields["host"] == "dlpfwd-test"
    if header == "rfc5424":
        assert fields["app"] == "dlpfwd"
    body = fields["msg"]
    if fmt == "cef":
        head, ext = parse_cef(body)
        event = by_id[ext["cs6"]]
        assert (head, ext) == cef_expected(event)
    elif fmt == "leef":
        head, attrs = parse_leef(body)
        event = by_id[attrs["eventId"]]
        assert (head, attrs) == leef_expected(event)
    else:
        event = by_id[orjson.loads(body)["id"]]
        assert from_dict(orjson.loads(body)) == event
    assert fields["severity"] == str(SYSLOG_SEV[event.severity])
    return event.id


CASES = [
    ("udp", "octet_counting", "cef", "rfc5424"),
    ("udp", "octet_counting", "leef", "rfc3164"),
    ("tcp", "octet_counting", "cef", "rfc5424"),
    ("tcp", "newline", "cef", "rfc3164"),
    ("tcp", "octet_counting", "leef", "rfc5424"),
    ("tcp", "newline", "json", "rfc5424"),
    ("tls", "octet_counting", "cef", "rfc5424"),
    ("tls", "octet_counting", "leef", "rfc3164"),
    ("tls", "newline", "json", "rfc5424"),
]


@pytest.mark.parametrize(("transport", "framing", "fmt", "header"), CASES)
def test_every_event_received_and_parsed_back(rsyslog: Rsyslog, pki: Pki, transport, framing, fmt, header) -> None:
    run = f"{transport}{framing[0]}{fmt}{header[-1]}"
    events = [sample_event(i, run=run) for i in range(120)]
    # hostile values ride along in every case: they must survive the real receiver too
    events[5].description = "a=b \\ c|d\r\nforged cs1=x suser=evil\x00nul \U0001f600 end"
    events[6].title = "pipe|in\\title\nnewline"
    events[7].user.upn = "^caret^=user"
    sink = make_sink(format=fmt, header=header, framing=framing, **settings_for(rsyslog, pki, transport))

    def udp_pace(progress) -> None:
        # UDP has no flow control: without root, rsyslog cannot enlarge its socket buffer,
        # so let it catch up before the next batch (the test is about content, not UDP loss)
        received(rsyslog, "udp", run, len(progress.delivered))

    result = drive(sink, entries_for(events), batch=25, after_batch=udp_pace if transport == "udp" else None)
    sink.close()
    assert sorted(result.delivered) == list(range(1, 121)) and not result.rejected
    lines = received(rsyslog, transport, run, len(events))
    by_id = {e.id: e for e in events}
    seen = [check_line(line, fmt, by_id, header) for line in lines]
    assert sorted(seen) == sorted(by_id), "each event exactly once"


def test_large_event_is_cut_not_lost(rsyslog: Rsyslog, pki: Pki) -> None:
    run = "big"
    event = sample_event(1, run=run, description="\u00e9=\\" * 20000)  # 60 KB of escapes and 2-byte chars
    sink = make_sink(format="cef", max_message_bytes=16000, **settings_for(rsyslog, pki, "tcp"))
    result = drive(sink, entries_for([event]))
    assert result.delivered == [1]
    (line,) = received(rsyslog, "tcp", run, 1)
    assert len(line.encode()) <= 16000
    _, ext = parse_cef(parse_syslog(line)["msg"])
    assert ext["msg"].endswith(MARKER) and event.description.startswith(ext["msg"][: -len(MARKER)])
    assert ext["cs6"] == event.id


def test_tls_verification_is_on_by_default(rsyslog: Rsyslog, pki: Pki) -> None:
    sink = make_sink(**settings_for(rsyslog, pki, "tls", tls={"ca_bundle": str(pki.other_ca)}))
    with pytest.raises(FatalError, match="not trusted"):
        sink.connect()
    tls = {"ca_bundle": str(pki.ca), "server_name": "qradar.example"}
    wrong_name = make_sink(**settings_for(rsyslog, pki, "tls", tls=tls))
    with pytest.raises(FatalError, match="not trusted"):
        wrong_name.connect()
    lab = make_sink(**settings_for(rsyslog, pki, "tls", tls={"verify": False}))
    lab.connect()
    lab.close()


def test_mutual_tls_with_client_certificate(rsyslog: Rsyslog, pki: Pki) -> None:
    run = "mtls"
    base = settings_for(rsyslog, pki, "tls", port=rsyslog.mtls_port)
    without = make_sink(**base)
    # the server refuses the handshake (or closes right after it) without a client certificate
    try:
        without.connect()
        outcome = without.write_batch(entries_for([sample_event(0, run="nocert")]))
        wait_for(lambda: not without.transport or not without.transport.alive(), timeout=5, what="rsyslog to drop us")
        assert outcome.pending
        assert not without.poll_acks().delivered
    except NotConnected:
        pass
    base["tls"] = {"ca_bundle": str(pki.ca), "client_cert": str(pki.client_cert), "client_key": str(pki.client_key)}
    sink = make_sink(**base)
    events = [sample_event(i, run=run) for i in range(10)]
    assert sorted(drive(sink, entries_for(events)).delivered) == list(range(1, 11))
    lines = received(rsyslog, "mtls", run, 10)
    assert len(lines) == 10
    assert not [line for line in rsyslog.lines("mtls") if "audit:nocert-" in line]


def test_unreachable_receiver_backs_off(pki: Pki) -> None:
    from tests.syslog.rsyslog import free_port

    sink = make_sink(host="127.0.0.1", port=free_port(), transport="tcp", reconnect_initial=2.0, reconnect_max=8.0)
    delays = []
    for _ in range(3):
        with pytest.raises(NotConnected) as info:
            sink.connect()
        delays.append(info.value.retry_after)
        sink.backoff.not_before = 0.0  # let the next attempt happen now
    assert delays == [2.0, 4.0, 8.0]
    with pytest.raises(NotConnected, match="not yet due"):
        sink.backoff.not_before = sink.clock() + 5
        sink.connect()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_rsyslog_restart_loses_nothing_confirmed(rsyslog: Rsyslog, pki: Pki, transport: str) -> None:
    """Restart rsyslog in the middle of a run. The documented bound: every entry the sink
    reported delivered was received; every event is received at least once in the end; an
    event received twice was counted in duplicates_possible."""
    run = f"restart{transport}"
    total = 1500
    events = [sample_event(i, run=run) for i in range(total)]
    settings = settings_for(rsyslog, pki, transport, confirm_seconds=0.3)
    sink = make_sink(format="cef", **settings)
    restarted = threading.Event()
    delivered_at_restart: list[int] = []

    def maybe_restart(progress) -> None:
        if not restarted.is_set() and len(progress.delivered) >= 300:
            restarted.set()
            delivered_at_restart.extend(progress.delivered)
            rsyslog.restart()

    result = drive(sink, entries_for(events), batch=20, after_batch=maybe_restart, timeout=80, max_pending=200)
    sink.close()
    assert restarted.is_set()
    assert sorted(set(result.delivered)) == list(range(1, total + 1))
    lines = received(rsyslog, transport, run, total, timeout=30)
    ids = [parse_cef(parse_syslog(line)["msg"])[1]["cs6"] for line in lines]
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    by_entry = {n + 1: e.id for n, e in enumerate(events)}
    # 1. nothing reported delivered before the restart is missing after it
    assert all(by_entry[n] in counts for n in delivered_at_restart)
    # 2. everything arrived
    assert set(counts) == {e.id for e in events}
    # 3. duplicates only where the sink said they were possible
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates <= result.duplicates_possible
    assert result.connects >= 2
    assert result.duplicates_possible >= 20, "the restart hit a written, unconfirmed batch"
    print(f"restart {transport}: re-sent {result.duplicates_possible}, received twice {duplicates}")


def test_receiver_gone_is_reported_as_retry_not_delivered(pki: Pki, tmp_path) -> None:
    """A peer that accepts then closes: the pending batch must come back as a retry."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    sink = make_sink(host="127.0.0.1", port=port, transport="tcp", confirm_seconds=5.0)
    sink.connect()
    conn, _ = listener.accept()
    out = sink.write_batch(entries_for([sample_event(i, run="gone") for i in range(3)]))
    assert out.pending == [1, 2, 3]
    conn.recv(65536)
    conn.close()  # the receiver goes away before the confirmation window ends
    listener.close()
    settled = wait_for(lambda: sink.poll_acks().retry or None, timeout=5, what="the retry")
    assert sorted(settled) == [1, 2, 3]
    with pytest.raises(NotConnected):
        sink.write_batch(entries_for([sample_event(9, run="gone")]))


def test_health_reports_reachability(rsyslog: Rsyslog, pki: Pki) -> None:
    good = make_sink(**settings_for(rsyslog, pki, "tls")).health()
    assert good.ok, good.checks
    from tests.syslog.rsyslog import free_port

    bad = make_sink(host="127.0.0.1", port=free_port(), transport="tcp").health()
    assert not bad.ok and "reachable" in [c.name for c in bad.checks if not c.ok]


def test_ssl_module_has_tls12_floor() -> None:
    from sinks.syslog.transport import tls_context

    assert tls_context().minimum_version >= ssl.TLSVersion.TLSv1_2
    assert tls_context(min_version="TLSv1.3").minimum_version == ssl.TLSVersion.TLSv1_3


_FRAGMENTS = st.sampled_from(
    list("|=\\\r\n\x00\t ^~ab") + ["\U0001f600", "\u00e9", "\u2028", "\x7f", "=\\", " cs1=x", "\\n", "\ufffd", "<13>"]
)
_hostile = st.one_of(st.lists(_FRAGMENTS, max_size=40).map("".join), st.text(max_size=80))
_runs = itertools.count()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(title=_hostile, description=_hostile, upn=_hostile, path=_hostile, fmt=st.sampled_from(["cef", "leef"]))
def test_hostile_strings_through_rsyslog(rsyslog: Rsyslog, pki: Pki, title, description, upn, path, fmt) -> None:
    """Hypothesis-made hostile values, through a real rsyslogd (TCP, newline framing: the
    framing a stray line feed would break), parsed back and compared field by field."""
    run = f"hyp{next(_runs)}"
    event = sample_event(1, run=run, title=title, description=description)
    event.user.upn = upn
    event.object.path = path
    sink = make_sink(format=fmt, framing="newline", **settings_for(rsyslog, pki, "tcp"))
    assert drive(sink, entries_for([event])).delivered == [1]
    sink.close()
    (line,) = received(rsyslog, "tcp", run, 1)
    check_line(line, fmt, {event.id: event})


def test_bytes_never_acknowledged_are_resent_after_ack_timeout() -> None:
    """A receiver that accepts but never reads, with a tiny window: written bytes stay
    unacknowledged, so after ack_timeout the batch comes back as a retry (never delivered)."""
    import socket

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by the accepted socket
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    sink = make_sink(
        host="127.0.0.1",
        port=listener.getsockname()[1],
        transport="tcp",
        ack_timeout=1.0,
        confirm_seconds=0.05,
        timeout=3.0,
    )
    try:
        sink.connect()
        conn, _ = listener.accept()
        big = [sample_event(i, run="stall", description="x" * 6000) for i in range(20)]  # ~150 KB
        out = sink.write_batch(entries_for(big))
        if out.retry:  # a kernel with a small send buffer: the write itself timed out
            assert sorted(out.retry) == list(range(1, 21)) and out.duplicates_possible == 20
        else:
            assert len(out.pending) == 20
            first = sink.poll_acks()
            assert not first.delivered, "nothing the receiver's TCP did not acknowledge may count as delivered"
            settled = wait_for(lambda: sink.poll_acks().retry or None, timeout=10, what="the ack timeout")
            assert sorted(settled) == list(range(1, 21))
        assert sink.transport is None  # dropped; the next write reconnects
        conn.close()
    finally:
        listener.close()
        sink.close()
