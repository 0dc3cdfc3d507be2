"""Ground truth of correlation for a generated tenant: the links the documented rules must find.

Independent of the forwarder's code: the correlation keys of each DLP event (audit record or
DLP alert) and of each non-DLP Defender alert are derived from the generator's *facts*, as
``docs/correlation.md`` defines them, and joined by brute force:

* ``same_user``: ``upn`` (the user's UPN, and an email's sender, case-folded) and ``oid``
  (Entra object id; alerts only: audit records carry none);
* ``same_file``: ``sha256``, ``sha1``, ``url`` (case-folded, no query), ``fname`` (a file's
  name, case-folded), ``msg`` (Internet message id without ``<>``, case-folded);
* ``same_device``: ``dev`` (Defender device id) and ``host`` (device name up to its first dot);
* ``same_incident``: ``inc`` (the Defender incident id; alerts only).

A DLP event and a non-DLP alert link when they share a key of a rule and their event times
(the record's ``CreationTime``, the alert's ``firstActivityDateTime``, as served) are within
the rule's window (minutes, 0 = any time). Malformed records (quarantined) are no DLP events.
Ids are the forwarder's event ids: ``audit:<Id>`` and ``alert:<id>``.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emulators.tenant.generator import Dataset, Facts

#: The documented default windows, in minutes (0 = any time).
DEFAULT_WINDOWS: dict[str, float] = {"same_user": 30, "same_file": 1440, "same_device": 60, "same_incident": 0}
RULE_OF: dict[str, str] = {
    "upn": "same_user",
    "oid": "same_user",
    "sha256": "same_file",
    "sha1": "same_file",
    "url": "same_file",
    "fname": "same_file",
    "msg": "same_file",
    "dev": "same_device",
    "host": "same_device",
    "inc": "same_incident",
}

Key = tuple[str, str]  # (type, normalized value)


@dataclass(frozen=True, order=True)
class ExpectedLink:
    """A link that must be found: DLP event id, alert id, reasons ``"<rule>:<key type>"`` sorted."""

    dlp: str
    alert: str
    reasons: tuple[str, ...]

    @property
    def pair(self) -> tuple[str, str]:
        return (self.dlp, self.alert)


def _served_time(text: str) -> float:
    """Epoch seconds of a time string as the generator serves it (whole seconds naive, or 7 digits Z)."""
    if text.endswith("Z"):
        head, _, frac = text[:-1].partition(".")
        base = dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC).timestamp()
        return base + (int(frac[:6]) / 1e6 if frac else 0.0)
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def _url(text: str) -> str:
    u = text.strip().casefold()
    for sep in ("?", "#"):
        u = u.split(sep, 1)[0]
    return u.rstrip("/")


def _msg(text: str) -> str:
    return text.strip().strip("<>").casefold()


def record_keys(f: Facts) -> set[Key]:
    """The keys of audit record ``f`` (Management Activity API) under the documented rules."""
    keys: set[Key] = {("upn", f.user.upn.casefold())}
    if f.workload in ("Exchange", "MicrosoftTeams"):
        keys.add(("msg", _msg(f.object_url)))
    elif f.workload in ("SharePoint", "OneDrive"):
        keys.add(("url", _url(f.object_url)))
        keys.add(("fname", f.object_name.casefold()))
    else:  # Endpoint
        keys |= {
            ("dev", f.user.device_id.lower()),
            ("host", f.user.device.casefold()),
            ("sha1", f"{f.extra:08x}" * 5),
            ("sha256", f"{f.extra:08x}" * 8),
            ("fname", f.object_name.casefold()),
        }
    return keys


def dlp_alert_keys(f: Facts, incident: str) -> set[Key]:
    """The keys of the DLP alert about record ``f`` (user, device, file or message evidence)."""
    keys: set[Key] = {("upn", f.user.upn.casefold()), ("oid", f.user.object_id.lower()), ("inc", incident)}
    if f.workload in ("Exchange", "MicrosoftTeams"):
        keys.add(("msg", _msg(f.object_url)))
        return keys
    keys |= {("sha1", f"{f.extra:08x}" * 5), ("sha256", f"{f.extra:08x}" * 8), ("fname", f.object_name.casefold())}
    folder = f.object_url.rsplit("/", 1)[0].rsplit("\\", 1)[0]
    if folder.startswith(("http://", "https://")):
        keys.add(("url", _url(folder)))
    if f.workload == "Endpoint":
        keys |= {("dev", f.user.device_id.lower()), ("host", f.user.device.casefold())}
    return keys


def defender_keys(ds: Dataset, j: int) -> set[Key]:
    """The keys of non-DLP alert ``j`` (from its :class:`DefenderSpec`, as its evidence shows them)."""
    spec = ds.defender_spec(j)
    user = spec.user
    keys: set[Key] = {
        ("upn", user.upn.casefold()),
        ("oid", user.object_id.lower()),
        ("inc", ds.incident_id(ds.incident_of_alert(j))),
    }
    if spec.device:
        keys |= {("dev", user.device_id.lower()), ("host", user.device.casefold())}
    if spec.file is not None:
        name, _folder, sha1, sha256 = spec.file
        keys |= {("fname", name.casefold()), ("sha1", sha1), ("sha256", sha256)}
    if spec.message is not None:
        msg_id, _subject, sender, _recipient = spec.message
        keys |= {("msg", _msg(msg_id)), ("upn", sender.casefold())}
    return keys


def _dlp_events(ds: Dataset, now: float, alerts: int) -> Iterator[tuple[str, float, set[Key]]]:
    """(event id, event time, keys) of every DLP event that exists at ``now``."""
    from emulators.tenant.generator import graph_time, mgmt_time

    for k in range(ds.blob_count):
        blob = ds.blob("DLP.All", k)
        if blob is None or blob.visible_at > now:
            continue
        for i in range(blob.first, blob.last):
            f = ds.facts(i)
            if not f.malformed:
                yield f"audit:{f.id}", _served_time(mgmt_time(f.time)), record_keys(f)
    for j in range(alerts):
        if ds.alert_role(j) == "dlp":
            f = ds.facts(ds.alert_record_index(j))
            incident = ds.incident_id(ds.incident_of_alert(j))
            yield f"alert:{ds.alert_id(j)}", _served_time(graph_time(f.time)), dlp_alert_keys(f, incident)


def expected_links(
    ds: Dataset, now: float | None = None, windows: dict[str, float] | None = None
) -> list[ExpectedLink]:
    """Every link that must be found among what exists at ``now`` (default: everything), sorted."""
    from emulators.tenant.generator import graph_time

    now = float("inf") if now is None else now
    win = {rule: minutes * 60.0 for rule, minutes in {**DEFAULT_WINDOWS, **(windows or {})}.items()}
    alerts = ds.alert_count if now == float("inf") else ds.alerts_until(now)
    postings: dict[Key, list[tuple[float, str]]] = {}
    for eid, t, keys in _dlp_events(ds, now, alerts):
        for key in keys:
            postings.setdefault(key, []).append((t, eid))
    for plist in postings.values():
        plist.sort()
    found: dict[tuple[str, str], set[str]] = {}
    for j in range(alerts):
        if ds.alert_role(j) == "dlp":
            continue
        aid = f"alert:{ds.alert_id(j)}"
        t = _served_time(graph_time(ds.defender_spec(j).activity))
        for key in defender_keys(ds, j):
            if key not in postings:
                continue
            plist = postings[key]
            rule = RULE_OF[key[0]]
            w = win[rule]
            lo, hi = (0, len(plist)) if w <= 0 else (
                bisect.bisect_left(plist, (t - w, "")),
                bisect.bisect_right(plist, (t + w, "\uffff")),
            )  # fmt: skip
            for _t, eid in plist[lo:hi]:
                found.setdefault((eid, aid), set()).add(f"{rule}:{key[0]}")
    return sorted(ExpectedLink(d, a, tuple(sorted(r))) for (d, a), r in found.items())
