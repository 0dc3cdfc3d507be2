"""The completeness report (``dlpfwd report --since T``): "is my data complete?"

Built from the ledger: every unit of work a source read (a Management API content blob, a
Graph page window) with what the source listed, fetched and parsed, what the host spooled,
quarantined or dropped as duplicate, and per sink what was delivered, dead-lettered, dropped
(``overflow = drop_oldest``) or is still pending.

A source/sink pair is *complete* when no unit expired or failed at the source, nothing was
quarantined, dead-lettered or dropped, and nothing is pending. Units that are listed but not
yet fetched and expire at the source within ``warn_within`` are reported as *at risk*: once
a content blob expires (7 days after it was listed, for the Management Activity API) it can
never be fetched again. Spooled events are safe from source-side expiry (they are on disk).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from forwarder.schema import epoch_seconds, iso_utc
from forwarder.state.base import LedgerRow

DEFAULT_WARN_WITHIN = 24 * 3600.0


@dataclass
class SinkTally:
    spooled: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    dropped: int = 0

    @property
    def pending(self) -> int:
        return max(0, self.spooled - self.delivered - self.dead_lettered - self.dropped)


@dataclass
class UnitNote:
    """A unit worth naming in the report (expired, failed, at risk)."""

    unit: str
    status: str
    expires: str
    detail: str


@dataclass
class SourceTally:
    units: int = 0
    listed: int = 0
    fetched: int = 0
    parsed: int = 0
    spooled: int = 0
    quarantined: int = 0
    duplicates: int = 0
    expired: list[UnitNote] = field(default_factory=list)
    failed: list[UnitNote] = field(default_factory=list)
    at_risk: list[UnitNote] = field(default_factory=list)
    sinks: dict[str, SinkTally] = field(default_factory=dict)

    def complete(self) -> bool:
        return (
            not self.expired
            and not self.failed
            and not self.quarantined
            and all(s.pending == 0 and s.dead_lettered == 0 and s.dropped == 0 for s in self.sinks.values())
        )


@dataclass
class Report:
    since: float
    generated: float
    sources: dict[str, SourceTally] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(s.complete() for s in self.sources.values())

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "since": iso_utc(_dt(self.since)),
            "generated": iso_utc(_dt(self.generated)),
            "complete": self.complete,
            "sources": {},
        }
        for name, s in self.sources.items():
            d = asdict(s)
            d["complete"] = s.complete()
            for sink, tally in s.sinks.items():
                d["sinks"][sink]["pending"] = tally.pending
            out["sources"][name] = d
        return out


def _dt(ts: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC)


def build_report(
    rows: Iterable[LedgerRow], since: float, now: float | None = None, warn_within: float = DEFAULT_WARN_WITHIN
) -> Report:
    """Aggregate ledger rows (``StateStore.ledger(since)``) into a :class:`Report`."""
    now = time.time() if now is None else now
    report = Report(since=since, generated=now)
    for row in rows:
        s = report.sources.setdefault(row.source, SourceTally())
        s.units += 1
        s.listed += row.listed
        s.fetched += row.fetched
        s.parsed += row.parsed
        s.spooled += row.spooled
        s.quarantined += row.quarantined
        s.duplicates += row.duplicates
        note = UnitNote(row.unit, row.status, row.expires, row.detail)
        expires = epoch_seconds(row.expires) if row.expires else None
        if row.status == "expired":
            s.expired.append(note)
        elif row.status in ("listed", "failed"):
            if expires is not None and expires <= now:
                note.status = "expired"
                note.detail = note.detail or "expired at the source before it could be fetched"
                s.expired.append(note)
            elif row.status == "failed":
                s.failed.append(note)
            if expires is not None and now < expires <= now + warn_within:
                s.at_risk.append(note)
        for sink, counts in row.sinks.items():
            t = s.sinks.setdefault(sink, SinkTally())
            t.spooled += counts.get("spooled", 0)
            t.delivered += counts.get("delivered", 0)
            t.dead_lettered += counts.get("dead", 0)
            t.dropped += counts.get("dropped", 0)
    return report


def render_text(report: Report, limit: int = 10) -> str:
    """A human-readable report."""
    lines = [
        f"Completeness since {iso_utc(_dt(report.since))} (generated {iso_utc(_dt(report.generated))}): "
        + ("COMPLETE" if report.complete else "INCOMPLETE")
    ]
    if not report.sources:
        lines.append("  no work recorded in this period")
    for name, s in sorted(report.sources.items()):
        lines.append(
            f"source {name}: {s.units} unit(s); listed {s.listed}, fetched {s.fetched}, parsed {s.parsed}, "
            f"spooled {s.spooled}, duplicates dropped {s.duplicates}, quarantined {s.quarantined}"
        )
        for sink, t in sorted(s.sinks.items()):
            lines.append(
                f"  -> {sink}: spooled {t.spooled}, delivered {t.delivered}, pending {t.pending}, "
                f"dead-lettered {t.dead_lettered}, dropped (spool full) {t.dropped}"
            )
        for title, notes in (
            ("LOST: expired at the source", s.expired),
            ("failed (will be retried while not expired)", s.failed),
            ("WARNING: not fetched yet and expiring soon", s.at_risk),
        ):
            if notes:
                lines.append(f"  {title}: {len(notes)} unit(s)")
                for n in notes[:limit]:
                    lines.append(f"    {n.unit} (expires {n.expires or '?'}) {n.detail}".rstrip())
                if len(notes) > limit:
                    lines.append(f"    ... and {len(notes) - limit} more")
        if s.quarantined:
            lines.append(f"  {s.quarantined} record(s) quarantined: see `dlpfwd dead-letters list --source {name}`")
    return "\n".join(lines)
