"""Counters and gauges of one forwarder, exposed in the Prometheus text format.

Metric names (all labelled by instance name):

* ``dlpfwd_source_events_total{source, stage}`` -- stage: ``read``, ``normalized``, ``spooled``,
  ``duplicates``, ``quarantined``, ``correlation_only`` (non-DLP alerts indexed for
  correlation, not forwarded);
* ``dlpfwd_sink_events_total{sink, outcome}`` -- outcome: ``delivered``, ``retried``,
  ``rejected``, ``dead_lettered``, ``dropped_oldest``, ``duplicates_possible``;
* ``dlpfwd_plugin_counter_total{instance, name}`` -- what plugins count through their context;
* ``dlpfwd_spool_events{sink}``, ``dlpfwd_spool_bytes{sink}``, ``dlpfwd_spool_oldest_age_seconds{sink}``;
* ``dlpfwd_source_last_poll_timestamp_seconds{source}``,
  ``dlpfwd_sink_last_delivery_timestamp_seconds{sink}``, ``dlpfwd_sink_breaker_open{sink}``,
  ``dlpfwd_source_paused{source}`` (1 while back-pressure holds the source);
* ``dlpfwd_stopped{role, instance}`` -- 1 while a source or sink is stopped by a fatal error (bad
  credentials, a configuration the peer rejects); 0 once it works again (role ``writeback``:
  the correlation write-back through a graph_security source, e.g. a token without ReadWrite);
* ``dlpfwd_writeback_total{source, outcome}`` -- correlation write-back to Defender XDR:
  ``commented``, ``recovered`` (the comment was already there: a crash after the POST),
  ``tagged`` (incidents), ``deferred``, ``dead_lettered``, ``dry_run``;
  ``dlpfwd_writeback_due{source}`` -- alerts still waiting after the last drain (its limit
  reached, or deferred after a failure until their retry time).

Each :class:`Metrics` has its own registry, so several forwarders (tests) never collide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)

disable_created_metrics()  # no *_created series: they double the exposition for no operator value


class Metrics:
    """The metric families of one :class:`forwarder.runtime.Forwarder`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.source_events = Counter(
            "dlpfwd_source_events", "Events per source and pipeline stage", ["source", "stage"], registry=r
        )
        self.sink_events = Counter(
            "dlpfwd_sink_events", "Entries per sink and delivery outcome", ["sink", "outcome"], registry=r
        )
        self.plugin_counter = Counter(
            "dlpfwd_plugin_counter", "Counters plugins report through their context", ["instance", "name"], registry=r
        )
        self.spool_events = Gauge("dlpfwd_spool_events", "Entries waiting in a sink's spool", ["sink"], registry=r)
        self.spool_bytes = Gauge("dlpfwd_spool_bytes", "Bytes waiting in a sink's spool", ["sink"], registry=r)
        self.spool_age = Gauge(
            "dlpfwd_spool_oldest_age_seconds", "Age of the oldest entry in a sink's spool", ["sink"], registry=r
        )
        self.last_poll = Gauge(
            "dlpfwd_source_last_poll_timestamp_seconds", "Last successful poll of a source", ["source"], registry=r
        )
        self.last_delivery = Gauge(
            "dlpfwd_sink_last_delivery_timestamp_seconds", "Last successful delivery of a sink", ["sink"], registry=r
        )
        self.breaker_open = Gauge(
            "dlpfwd_sink_breaker_open", "1 while a sink's circuit breaker is open", ["sink"], registry=r
        )
        self.stopped = Gauge(
            "dlpfwd_stopped", "1 while a source or sink is stopped by a fatal error", ["role", "instance"], registry=r
        )
        self.paused = Gauge("dlpfwd_source_paused", "1 while back-pressure pauses a source", ["source"], registry=r)
        self.writeback = Counter(
            "dlpfwd_writeback", "Correlation write-back to Defender XDR by outcome", ["source", "outcome"], registry=r
        )
        self.writeback_due = Gauge(
            "dlpfwd_writeback_due", "Correlated alerts waiting for their write-back", ["source"], registry=r
        )
        self._server: Any = None

    def source(self, source: str, stage: str, n: int = 1) -> None:
        if n:
            self.source_events.labels(source, stage).inc(n)

    def sink(self, sink: str, outcome: str, n: int = 1) -> None:
        if n:
            self.sink_events.labels(sink, outcome).inc(n)

    def plugin_counter_for(self, instance: str) -> Callable[[str, int], None]:
        def count(name: str, n: int = 1) -> None:
            self.plugin_counter.labels(instance, name).inc(n)

        return count

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 if absent): for tests and ``dlpfwd state``."""
        v = self.registry.get_sample_value(name, labels)
        return v if v is not None else 0.0

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``addr:port`` (0 = pick a free port); returns the port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
