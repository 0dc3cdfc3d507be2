"""Synthetic DLP events and Defender alerts for the correlation tests."""

from __future__ import annotations

import datetime as dt
import random

from forwarder.correlation.index import CorrelationIndex
from forwarder.correlation.settings import CorrelationSettings, RuleSettings
from forwarder.schema import KIND_ALERT, KIND_AUDIT, Device, DlpEvent, Identity, Links, ObjectRef, Related, iso_utc

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def at(minutes: float) -> str:
    return iso_utc(T0 + dt.timedelta(minutes=minutes))


def dlp(ident: str, upn: str = "", minutes: float = 0, **kw: object) -> DlpEvent:
    """A DLP audit record (``kind=audit``)."""
    ev = DlpEvent(
        id=ident,
        idempotency_key=f"{ident}@1",
        kind=KIND_AUDIT,
        operation="DlpRuleMatch",
        event_time=at(minutes),
        title=f"dlp {ident}",
        user=Identity(upn=upn),
        tenant_id="t1",
    )
    for k, v in kw.items():
        setattr(ev, k, v)
    return ev


def alert(
    ident: str,
    upn: str = "",
    minutes: float = 0,
    service: str = "microsoftDefenderForEndpoint",
    incident: str = "",
    **kw: object,
) -> DlpEvent:
    """A Defender alert (``kind=alert``) of ``service``; a DLP alert when service is dataLossPrevention."""
    ev = DlpEvent(
        id=f"alert:{ident}",
        idempotency_key=f"alert:{ident}@1",
        kind=KIND_ALERT,
        operation="DlpAlert" if service == "dataLossPrevention" else "Alert",
        event_time=at(minutes),
        title=f"alert {ident}",
        severity="high",
        user=Identity(upn=upn),
        related=Related(alert_ids=[ident], incident_ids=[incident] if incident else []),
        links=Links(alert=f"https://security.microsoft.com/alerts/{ident}"),
        raw={"id": ident, "serviceSource": service},
        tenant_id="t1",
    )
    for k, v in kw.items():
        setattr(ev, k, v)
    return ev


def settings(**kw: object) -> CorrelationSettings:
    s = CorrelationSettings(enabled=True)
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def rule(window: float, enabled: bool = True) -> RuleSettings:
    return RuleSettings(enabled=enabled, window_minutes=window)


__all__ = ["Device", "ObjectRef", "alert", "at", "dlp", "rule", "settings"]


def index_in_order(
    directory: str, records: list[DlpEvent], alerts: list[DlpEvent], order: str, batch: int
) -> CorrelationIndex:
    """A new enabled ``CorrelationIndex`` in ``directory`` fed ``records`` and ``alerts`` by
    batches of ``batch`` events, in ``order``: ``records_first``, ``alerts_first`` or
    ``shuffled`` (both mixed, seed 4). The caller closes it."""
    if order == "records_first":
        stream = records + alerts
    elif order == "alerts_first":
        stream = alerts + records
    else:
        stream = records + alerts
        random.Random(4).shuffle(stream)
    idx = CorrelationIndex(directory, CorrelationSettings(enabled=True))
    for i in range(0, len(stream), batch):
        idx.index_batch(stream[i : i + batch])
    return idx
