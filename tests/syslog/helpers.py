"""Events, sinks and a small host stand-in for the syslog sink tests."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from forwarder.errors import NotConnected
from forwarder.schema import (
    DetectedValue,
    Device,
    DlpEvent,
    Identity,
    Label,
    Links,
    ObjectRef,
    Override,
    PolicyMatch,
    RuleMatch,
    SensitiveType,
    to_json,
)
from forwarder.settings import build
from forwarder.sink import Entry, SinkContext
from sinks.syslog.settings import SyslogSettings
from sinks.syslog.sink import SyslogSink

SEVERITIES = ("unknown", "informational", "low", "medium", "high")


def sample_event(i: int, run: str = "t", **overrides: Any) -> DlpEvent:
    """A realistic DLP rule match, different for each ``i``; ``run`` makes ids unique per test."""
    event = DlpEvent(
        id=f"audit:{run}-{i:06d}-0f9c1a7e-1111-2222",
        idempotency_key=f"audit:{run}-{i}@2024-05-01T12:00:00Z",
        kind="audit",
        operation="DlpRuleMatch",
        event_time=f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}000Z",
        updated_time="2024-05-01T13:00:00Z",
        tenant_id="11111111-2222-3333-4444-555555555555",
        source="contoso",
        source_type="management_activity",
        record_type=13,
        workload="Exchange" if i % 2 else "Endpoint",
        severity=SEVERITIES[i % 5],
        status="active",
        title=f"PCI policy match #{i}",
        description=f"Credit card numbers found in message {i}",
        policies=[
            PolicyMatch(
                id="p1",
                name="PCI DSS",
                rules=[RuleMatch(id="r1", name="Block cards", severity="high", actions=["BlockAccess", "NotifyUser"])],
            )
        ],
        override=Override(justification="business need" if i % 3 == 0 else ""),
        user=Identity(upn=f"user{i}@contoso.com", object_id="aaaa-bbbb"),
        sender=f"user{i}@contoso.com",
        recipients=[f"ext{i}@fabrikam.com", "audit@contoso.com"],
        object=ObjectRef(
            type="file",
            name=f"report-{i}.xlsx",
            path=f"/sites/finance/Shared Documents/report-{i}.xlsx",
            url=f"https://contoso.sharepoint.com/sites/finance/report-{i}.xlsx",
            size=1000 + i,
            sha256="ab" * 32,
        ),
        sensitive_types=[
            SensitiveType(id="50842eb7", name="Credit Card Number", count=3, detected_values=[DetectedValue("cc", "")])
        ],
        labels=[Label(id="l1", name="Confidential")],
        device=Device(name="LAPTOP-1", id="dev-1", application="excel.exe", target="E:\\USB"),
        client_ip="10.1.2.3" if i % 4 else "2001:db8::7",
        links=Links(purview="https://purview.microsoft.com/audit?tid=1111"),
    )
    for key, value in overrides.items():
        setattr(event, key, value)
    return event


def entries_for(events: Iterable[DlpEvent], start: int = 1) -> list[Entry]:
    return [Entry(start + n, to_json(e)) for n, e in enumerate(events)]


def make_sink(name: str = "qradar", **settings: Any) -> SyslogSink:
    """Build the sink through the real settings path, as the host does."""
    problems: list[str] = []
    parsed = build(SyslogSettings, settings, f"sinks.{name}", problems)
    assert not problems, problems
    return SyslogSink(name, parsed, SinkContext(name, logging.getLogger(f"dlpfwd.test.{name}")))


@dataclass
class Run:
    delivered: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    duplicates_possible: int = 0
    retried: int = 0
    connects: int = 0


def drive(
    sink: SyslogSink,
    entries: list[Entry],
    batch: int = 50,
    timeout: float = 60.0,
    after_batch: Callable[[Run], None] | None = None,
    max_pending: int = 100_000,
) -> Run:
    """What the host does, in small: write batches (at most ``max_pending`` entries in flight),
    poll acknowledgements, re-queue retries, reconnect when the sink says so. Returns when
    every entry is settled."""
    queue: deque[Entry] = deque(entries)
    by_id = {e.id: e for e in entries}
    pending: set[int] = set()
    run = Run()
    connected = False
    deadline = time.monotonic() + timeout

    def apply(outcome: Any) -> None:
        run.delivered.extend(outcome.delivered)
        run.rejected.update(outcome.rejected)
        run.duplicates_possible += outcome.duplicates_possible
        pending.update(outcome.pending)
        pending.difference_update(outcome.delivered)
        pending.difference_update(outcome.retry)
        retry = sorted(set(outcome.retry))
        run.retried += len(retry)
        for i in reversed(retry):
            queue.appendleft(by_id[i])

    while queue or pending:
        assert time.monotonic() < deadline, f"not settled in {timeout} s: {len(queue)} queued, {len(pending)} pending"
        if not connected:
            try:
                sink.connect()
                connected = True
                run.connects += 1
            except NotConnected:
                time.sleep(0.05)
                continue
        if pending:
            apply(sink.poll_acks())
        if queue and len(pending) < max_pending:
            chunk = [queue.popleft() for _ in range(min(batch, len(queue)))]
            try:
                apply(sink.write_batch(chunk))
            except NotConnected:
                connected = False
                queue.extendleft(reversed(chunk))
                apply(sink.poll_acks())  # lost in-flight entries come back as retries
                continue
            if after_batch:
                after_batch(run)
        elif pending:
            time.sleep(0.01)  # waiting for the confirmation window to pass
    return run
