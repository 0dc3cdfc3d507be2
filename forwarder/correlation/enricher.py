"""The built-in correlation enricher: ``event.enrichment["correlation"]`` from the index.

It implements the same hook as third-party enrichers (``dlpfwd_enrich_events``) and reads the
batch's links from ``context.correlation``; it makes no remote call. Shape (every key always
present, lists sorted, so the same links always give the same bytes)::

    "correlation": {
      "status": "ok",
      "related_alerts": [            # DLP events: the Defender alerts linked to it
        {"id", "title", "severity", "service_source", "time", "reasons": ["same_user:upn", ...],
         "incidents": [...], "url"}],
      "related_events": [            # Defender alerts: the DLP events linked to it
        {"id", "kind", "title", "severity", "time", "policies": [...], "reasons": [...]}],
      "incidents": ["2001", ...],    # the event's own incidents and those of related alerts
      "prior_incidents": {"count": 2, "ids": ["1990", "1995"]},  # same user, N days before
      "entities": {"users": [...], "devices": [...], "files": [...]},
      "links": {"alerts": [portal URLs], "incidents": [portal URLs]}
    }

Both ``related_*`` keys are always present (one of them empty). They hold at most
``max_related`` entries (by time, then id); ``related_count`` gives the full number.
"""

from __future__ import annotations

from typing import Any

from forwarder.correlation.keys import SIDE_DLP
from forwarder.hookspecs import hookimpl
from forwarder.schema import DlpEvent

KEY = "correlation"
_PORTAL = "https://security.microsoft.com"


def _names(incidents: Any) -> list[str]:
    """Incident ids in their documented order: by length, then text (numeric ids numerically)."""
    return sorted(incidents, key=lambda s: (len(s), s))


def _incident_url(incident: str, tenant: str) -> str:
    return f"{_PORTAL}/incidents/{incident}" + (f"?tid={tenant}" if tenant else "")


@hookimpl
def dlpfwd_enrich_events(events: list[DlpEvent], context: Any) -> None:
    """Write ``enrichment["correlation"]`` for each indexed event of the batch."""
    result = context.correlation
    if result is None:
        return
    limit = context.settings.max_related if context.settings is not None else 50
    for ev in events:
        links = result.links.get(ev.id)
        info = result.infos.get(ev.id)
        if links is None or info is None:
            continue  # not indexed (incidents, correlation events, events without id or time)
        dlp_side = info["side"] == SIDE_DLP
        if not links:  # most events: nothing linked, only their own incidents and entities
            own = info["incidents"]
            if len(own) > 1:
                own = _names(own)
            prior = result.prior.get(ev.id)
            prior = [i for i in prior if i not in own] if prior else []
            # the event's own summary was built for this batch (index.summary_of) and is only read
            # afterwards: its fresh lists are handed over, not copied
            ev.enrichment[KEY] = {
                "status": "ok",
                "related_alerts": [],
                "related_events": [],
                "related_count": 0,
                "incidents": own,
                "prior_incidents": {"count": len(prior), "ids": prior},
                "entities": {"users": info["users"], "devices": info["devices"], "files": info["files"]},
                "links": {"alerts": [], "incidents": [_incident_url(i, ev.tenant_id) for i in own] if own else []},
            }
            continue
        related: list[dict[str, Any]] = []
        incidents = set(info["incidents"])
        users, devices, files = set(info["users"]), set(info["devices"]), set(info["files"])
        alert_urls: set[str] = set()
        for link in links:
            other = result.infos.get(link.alert if dlp_side else link.dlp)
            if other is None:
                continue  # the other side was evicted from the index
            incidents.update(other["incidents"])
            users.update(other["users"])
            devices.update(other["devices"])
            files.update(other["files"])
            if dlp_side:
                if other["alert_url"]:
                    alert_urls.add(other["alert_url"])
                related.append(
                    {
                        "id": other["id"],
                        "title": other["title"],
                        "severity": other["severity"],
                        "service_source": other["service_source"],
                        "time": other["time"],
                        "reasons": list(link.reasons),
                        "incidents": list(other["incidents"]),  # a copy: summaries are shared between batches
                        "url": other["alert_url"],
                    }
                )
            else:
                related.append(
                    {
                        "id": other["id"],
                        "kind": other["kind"],
                        "title": other["title"],
                        "severity": other["severity"],
                        "time": other["time"],
                        "policies": list(other["policies"]),
                        "reasons": list(link.reasons),
                    }
                )
        related.sort(key=lambda r: (r["time"], r["id"]))
        prior = [i for i in result.prior.get(ev.id, []) if i not in incidents]  # not the ones it is part of
        ordered_incidents = _names(incidents)
        ev.enrichment[KEY] = {
            "status": "ok",
            "related_alerts": related[:limit] if dlp_side else [],
            "related_events": [] if dlp_side else related[:limit],
            "related_count": len(related),
            "incidents": ordered_incidents,
            "prior_incidents": {"count": len(prior), "ids": prior},
            "entities": {"users": sorted(users), "devices": sorted(devices), "files": sorted(files)},
            "links": {
                "alerts": sorted(alert_urls),
                "incidents": [_incident_url(i, ev.tenant_id) for i in ordered_incidents],
            },
        }
