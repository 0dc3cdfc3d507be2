"""``SyslogSink``: DLP events as CEF, LEEF 2.0 or JSON over UDP, TCP or TLS syslog.

Delivery guarantee (syslog has no application-level acknowledgement; see docs/qradar.md):

* **UDP** -- an event is *delivered* once the kernel accepted its datagram. Nothing tells us
  it arrived; loss is possible (network, receiver down, buffer overrun). Never retried after
  that point, so no duplicates.
* **TCP / TLS** -- ``write_batch`` writes the batch and reports it *pending*. ``poll_acks``
  reports an entry *delivered* only when (1) the receiver's TCP stack has acknowledged every
  byte of it (the socket send queue, ``SIOCOUTQ``, has drained past it) and (2) the
  connection was still open ``confirm_seconds`` later. If the connection breaks, is closed by
  the receiver or stays unacknowledged for ``ack_timeout`` first, every pending entry is
  re-sent after reconnecting and counted in ``Outcome.duplicates_possible``. What remains
  possible is loss *inside* the receiver after its TCP stack took the bytes and it stayed up
  ``confirm_seconds`` (e.g. an in-memory queue discarded on a crash) -- the receiver's own
  queue settings govern that -- and duplicates (at most the entries counted).
  Where ``SIOCOUTQ`` is unavailable (not Linux), condition (1) degrades to "written".
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from forwarder.errors import FatalError, NotConnected
from forwarder.sink import Entry, Health, Outcome, Sink, SinkContext
from sinks.syslog.cef import FormatError, format_cef
from sinks.syslog.header import FACILITIES, HeaderBuilder
from sinks.syslog.jsonfmt import format_json
from sinks.syslog.leef import LeefFormatter
from sinks.syslog.settings import SyslogSettings
from sinks.syslog.transport import (
    UDP_MAX,
    TcpTransport,
    TlsTransport,
    Transport,
    UdpTransport,
    frame,
    tls_context,
)


@dataclass
class _InFlight:
    """One written batch awaiting confirmation."""

    ids: list[int]
    end: int  # bytes written on this connection once the batch was out
    acked_at: float | None = None
    sent_at: float = field(default_factory=time.monotonic)


class Backoff:
    """Exponential reconnect delays: initial, 2x, 4x ... capped at ``maximum``; reset on success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self.failures = 0
        self.not_before = 0.0

    def failed(self, now: float) -> float:
        delay = min(self.initial * (2**self.failures), self.maximum)
        self.failures += 1
        self.not_before = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = 0.0


class SyslogSink(Sink):
    """Sends each event as one syslog message; see the module docstring for the guarantee."""

    settings_class = SyslogSettings
    max_batch_events = 1000
    acknowledgements = True  # tcp/tls report pending until confirmed (see module docstring)

    def __init__(self, name: str, settings: SyslogSettings, context: SinkContext) -> None:
        super().__init__(name, settings, context)
        self.settings: SyslogSettings = settings
        self.max_bytes = min(settings.effective_max_bytes(), UDP_MAX)
        self.headers = HeaderBuilder(
            settings.header,
            FACILITIES[settings.facility],
            settings.hostname or socket.gethostname(),
            settings.app_name,
            str(os.getpid()),
            tag=settings.rfc3164_tag,
        )
        self._formatter = self._make_formatter()
        self.transport: Transport | None = None
        self.backoff = Backoff(settings.reconnect_initial, settings.reconnect_max)
        self._inflight: deque[_InFlight] = deque()
        self._sent = 0
        self._lost: list[int] = []
        self._lost_reason = ""
        self.clock: Callable[[], float] = time.monotonic

    # ------------------------------------------------------------------ formatting

    def _make_formatter(self) -> Callable[[dict[str, Any], int], str]:
        fmt = self.settings.format
        if fmt == "cef":
            return format_cef
        if fmt == "leef":
            try:
                return LeefFormatter(self.settings.leef_delimiter).format
            except ValueError as exc:
                raise FatalError(f"sinks.{self.name}.leef_delimiter: {exc}") from exc
        # The host strips ``raw`` before spooling unless this sink's ``carry_raw`` option is on.
        return lambda data, budget: format_json(data, budget, carry_raw=True)

    def encode(self, data: dict[str, Any]) -> bytes:
        """One event as a complete syslog message (header + body), within ``max_bytes``."""
        get = data.get
        header = self.headers.build(
            str(get("severity") or "unknown"),
            str(get("event_time") or ""),
            str(get("operation") or get("kind") or "-"),
        )
        budget = self.max_bytes - len(header)  # headers are ASCII
        return (header + self._formatter(data, budget)).encode()

    # ------------------------------------------------------------------ connection

    def _make_transport(self) -> Transport:
        s = self.settings
        port = s.effective_port()
        if s.transport == "udp":
            return UdpTransport(s.host, port)
        if s.transport == "tcp":
            return TcpTransport(s.host, port, s.timeout)
        try:
            context = tls_context(s.tls.ca_bundle, s.tls.verify, s.tls.client_cert, s.tls.client_key, s.tls.min_version)
        except (OSError, ssl.SSLError) as exc:
            raise FatalError(f"sinks.{self.name}.tls: cannot load the CA bundle or client certificate: {exc}") from exc
        return TlsTransport(s.host, port, s.timeout, context, s.tls.server_name)

    def _where(self) -> str:
        s = self.settings
        return f"{s.transport}://{s.host}:{s.effective_port()}"

    def connect(self) -> None:
        """Connect, honouring the reconnect back-off; NotConnected (with the delay) on failure."""
        now = self.clock()
        if now < self.backoff.not_before:
            raise NotConnected(f"next connection attempt to {self._where()} not yet due", self.backoff.not_before - now)
        transport = self._make_transport()
        try:
            transport.connect()
        except ssl.SSLCertVerificationError as exc:
            transport.close()
            raise FatalError(
                f"TLS: the certificate of {self._where()} is not trusted ({exc.verify_message}); "
                "set tls.ca_bundle or tls.server_name"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            transport.close()
            delay = self.backoff.failed(self.clock())
            self.context.count("connect_failures")
            raise NotConnected(f"cannot connect to {self._where()}: {_reason(exc)}", delay) from exc
        self.backoff.succeeded()
        self.transport = transport
        self._sent = 0
        self.context.count("connects")

    def _drop(self, reason: str) -> None:
        """Close the connection; every unconfirmed entry will be retried (maybe a duplicate)."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        for batch in self._inflight:
            self._lost.extend(batch.ids)
        self._inflight.clear()
        self._lost_reason = reason
        self.backoff.not_before = 0.0
        self.log.warning("sink %s: connection to %s dropped: %s", self.name, self._where(), reason)

    # ------------------------------------------------------------------ delivery

    def write_batch(self, entries: Sequence[Entry]) -> Outcome:
        if self.transport is None:
            raise NotConnected(f"not connected to {self._where()}")
        outcome = Outcome()
        frames: list[bytes] = []
        ids: list[int] = []
        framing = self.settings.framing
        stream = self.transport.stream
        for entry in entries:
            try:
                # Decode here rather than through ``entry.data``, which would keep every
                # decoded event of the batch alive (and the garbage collector busy) until the
                # batch is done.
                message = self.encode(orjson.loads(entry.payload))
            except FormatError as exc:
                outcome.rejected[entry.id] = str(exc)
                continue
            except ValueError as exc:  # undecodable payload
                outcome.rejected[entry.id] = f"cannot read the spooled event: {exc}"
                continue
            except (TypeError, AttributeError) as exc:  # a value of a type the schema does not allow
                outcome.rejected[entry.id] = f"cannot format the event: {type(exc).__name__}: {exc}"
                continue
            frames.append(frame(message, framing) if stream else message)
            ids.append(entry.id)
        if not ids:
            return outcome
        if not stream:
            return self._send_datagrams(frames, ids, outcome)
        transport = self.transport
        if not transport.alive():
            self._drop("the receiver closed the connection")
            raise NotConnected(f"{self._where()} closed the connection")
        try:
            transport.send(frames)
        except (OSError, ssl.SSLError) as exc:
            self._drop(f"write failed: {_reason(exc)}")
            outcome.retry.extend(ids)
            outcome.retry_reason = f"write to {self._where()} failed: {_reason(exc)}"
            outcome.duplicates_possible += len(ids)
            return outcome
        self._sent += sum(len(f) for f in frames)
        self._inflight.append(_InFlight(ids, self._sent))
        outcome.pending.extend(ids)
        self.context.count("messages_written", len(ids))
        return outcome

    def _send_datagrams(self, frames: list[bytes], ids: list[int], outcome: Outcome) -> Outcome:
        assert self.transport is not None
        for i, datagram in enumerate(frames):
            try:
                self.transport.send([datagram])
            except OSError as exc:
                # ECONNREFUSED: an ICMP port-unreachable came back for an earlier datagram.
                outcome.retry.extend(ids[i:])
                outcome.retry_reason = f"send to {self._where()} failed: {_reason(exc)}"
                self.context.count("udp_send_errors")
                break
            outcome.delivered.append(ids[i])
        self.context.count("messages_written", len(outcome.delivered))
        return outcome

    def poll_acks(self) -> Outcome:
        """Settle written entries (see the module docstring); never blocks."""
        outcome = Outcome()
        now = self.clock()
        transport = self.transport
        if self._inflight and transport is not None:
            if not transport.alive():
                self._drop("the receiver closed the connection")
            else:
                unacked = transport.unacked_bytes()
                acked = self._sent - unacked if unacked is not None else self._sent
                for batch in self._inflight:
                    if batch.acked_at is None and batch.end <= acked:
                        batch.acked_at = now
                confirm = self.settings.confirm_seconds
                while self._inflight:
                    head = self._inflight[0]
                    if head.acked_at is None or now - head.acked_at < confirm:
                        break
                    outcome.delivered.extend(self._inflight.popleft().ids)
                if self._inflight:
                    head = self._inflight[0]
                    if head.acked_at is None and now - head.sent_at > self.settings.ack_timeout:
                        self._drop(f"written data unacknowledged for {self.settings.ack_timeout:g} s")
        if self._lost:
            outcome.retry.extend(self._lost)
            outcome.duplicates_possible += len(self._lost)
            outcome.retry_reason = f"connection to {self._where()} lost before confirmation ({self._lost_reason})"
            self.context.count("unconfirmed_resent", len(self._lost))
            self._lost = []
        return outcome

    @property
    def unconfirmed(self) -> int:
        """How many entries are written but not yet confirmed."""
        return sum(len(b.ids) for b in self._inflight)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self._inflight.clear()

    def health(self) -> Health:
        health = Health()
        s = self.settings
        try:
            self.encode({"id": "health:0", "kind": "audit", "operation": "HealthCheck"})
            health.add("format", True, f"{s.format} with {s.header} header, max {self.max_bytes} bytes")
        except (FormatError, FatalError) as exc:
            health.add("format", False, str(exc))
        transport: Transport | None = None
        try:
            transport = self._make_transport()
            transport.connect()
            detail = "resolved (UDP cannot confirm a receiver)" if s.transport == "udp" else "connected"
            health.add("reachable", True, f"{self._where()}: {detail}")
        except (OSError, ssl.SSLError, FatalError) as exc:
            health.add("reachable", False, f"{self._where()}: {_reason(exc)}")
        finally:
            if transport is not None:
                transport.close()
        return health


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
