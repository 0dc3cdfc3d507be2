"""Options the host owns for every source and sink instance, whatever its plugin.

They sit beside a plugin's own settings in the same TOML table (``[sinks.batch]``,
``[sinks.retry]``, ``[sinks.filter]``, ``[sinks.spool]``; ``poll_interval`` on sources). A plugin
never declares these; it may only cap batches through ``Sink.max_batch_events`` /
``Sink.max_batch_bytes``, which the host enforces over the operator's values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from forwarder.settings import setting


@dataclass
class BatchOptions:
    """``[sinks.batch]``: when the host hands a batch to the sink."""

    max_events: int = setting(500, doc="most events in one batch (capped by the sink's own limit)", minimum=1)
    max_bytes: int = setting(
        4 * 1024 * 1024, doc="most serialized bytes in one batch (capped by the sink's own limit)", minimum=1024
    )
    max_wait: float = setting(1.0, doc="seconds to wait for a fuller batch before sending a partial one", minimum=0)


@dataclass
class RetryOptions:
    """``[sinks.retry]``: exponential back-off with full jitter, honouring Retry-After."""

    initial: float = setting(1.0, doc="first back-off ceiling in seconds", minimum=0.0)
    maximum: float = setting(300.0, doc="largest back-off in seconds", minimum=0.0)
    multiplier: float = setting(2.0, doc="growth of the back-off ceiling per consecutive failure", minimum=1.0)
    breaker_failures: int = setting(5, doc="consecutive failed batches that open the circuit breaker", minimum=1)
    breaker_cooldown: float = setting(60.0, doc="seconds an open breaker waits before a probe batch", minimum=0)


@dataclass
class FilterOptions:
    """``[sinks.filter]``: which events this sink's spool receives. Empty lists mean all."""

    kinds: list[str] = setting(default_factory=list, doc="event kinds: audit, alert, incident, correlation")
    workloads: list[str] = setting(default_factory=list, doc="workloads, e.g. Exchange, Endpoint")
    sources: list[str] = setting(default_factory=list, doc="source instance names")
    min_severity: str = setting(
        "unknown", doc="lowest severity forwarded", choices=("unknown", "informational", "low", "medium", "high")
    )


@dataclass
class SpoolOptions:
    """``[sinks.spool]``: the sink's durable queue on disk."""

    max_events: int = setting(5_000_000, doc="spool size cap in events", minimum=1)
    max_bytes: int = setting(8 * 1024**3, doc="spool size cap in bytes", minimum=1024)
    overflow: str = setting(
        "block",
        doc="when full: 'block' pauses the sources (nothing dropped); 'drop_oldest' drops the oldest, counted",
        choices=("block", "drop_oldest"),
    )


@dataclass
class SinkOptions:
    """Everything the host owns for one sink instance."""

    batch: BatchOptions = field(default_factory=BatchOptions)
    retry: RetryOptions = field(default_factory=RetryOptions)
    filter: FilterOptions = field(default_factory=FilterOptions)
    spool: SpoolOptions = field(default_factory=SpoolOptions)
    carry_raw: bool | None = setting(None, doc="send the original record in raw (default: the sink type's choice)")
    expect_delivery_within: float = setting(
        900.0,
        doc="seconds: `dlpfwd health` fails when this sink has a backlog and delivered nothing for longer (0 = off)",
        minimum=0,
    )


@dataclass
class SourceOptions:
    """Everything the host owns for one source instance."""

    poll_interval: float = setting(60.0, doc="seconds between polls once caught up", minimum=0)
    expect_poll_within: float = setting(
        0.0, doc="seconds: `dlpfwd health` fails when no poll completed for longer (0 = 3 x poll_interval)", minimum=0
    )
    enabled: bool = setting(True, doc="false: configured but not run")
