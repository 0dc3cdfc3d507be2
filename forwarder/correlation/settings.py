"""``[correlation]``: the correlation index, its rules and the enrichment stage.

::

    [correlation]
    enabled = true
    retention_days = 30          # how long the index remembers an event (event time)
    max_items = 200000           # size bound of the index; the oldest events are evicted first
    [correlation.same_user]
    window_minutes = 30          # +/- minutes between a DLP event and an alert of the same user
    [correlation.same_file]
    enabled = false              # each rule can be turned off

A ``window_minutes`` of 0 means "any time within the retention window".
"""

from __future__ import annotations

from dataclasses import dataclass

from forwarder.settings import setting


@dataclass
class RuleSettings:
    """One correlation rule: on or off, and its time window."""

    enabled: bool = setting(True, doc="whether this rule links events")
    window_minutes: float = setting(
        30.0, doc="largest time difference (minutes, either direction) between the two sides; 0 = any", minimum=0
    )


def _rule(window: float) -> RuleSettings:
    return RuleSettings(enabled=True, window_minutes=window)


@dataclass
class CorrelationSettings:
    """``[correlation]``: off by default; nothing of it runs (and nothing costs) when off."""

    enabled: bool = setting(False, doc="index DLP events and Defender alerts, link and enrich them")
    retention_days: float = setting(30.0, doc="days (of event time) an event stays in the index", minimum=0.01)
    max_items: int = setting(200_000, doc="most events kept in the index; the oldest are evicted first", minimum=10)
    max_links: int = setting(1_000_000, doc="most links remembered (each link is announced once)", minimum=10)
    prior_incident_days: float = setting(
        30.0, doc="days before an event in which incidents of the same user count as prior incidents", minimum=0
    )
    max_related: int = setting(50, doc="most related alerts/events listed in one event's enrichment", minimum=1)
    forward_alerts: bool = setting(
        False, doc="also forward non-DLP (Defender) alerts read for correlation; by default they are only indexed"
    )
    emit_links: bool = setting(True, doc="emit a 'correlation' event for a link found after its DLP event was spooled")
    enricher_timeout: float = setting(
        5.0,
        doc="seconds one enricher may take per batch; past it the batch goes on unenriched and flagged",
        minimum=0.01,
    )
    writeback_sources: list[str] = setting(
        default_factory=list,
        doc="graph_security sources whose Defender alerts get a DLP-context comment and their incident a tag "
        "(dlpfwd writeback; needs SecurityAlert.ReadWrite.All and SecurityIncident.ReadWrite.All)",
    )
    writeback_tag: str = setting("dlpfwd:dlp-correlated", doc="custom tag added to the incidents of correlated alerts")
    writeback_interval: float = setting(
        60.0,
        doc="seconds between write-back drains inside dlpfwd run (0 = only the dlpfwd writeback command)",
        minimum=0,
    )
    writeback_limit: int = setting(100, doc="most alerts written per drain (the rest wait for the next)", minimum=1)
    writeback_dry_run: bool = setting(
        False, doc="dlpfwd run logs the comments and tags it would write, and writes nothing"
    )
    same_user: RuleSettings = setting(
        default_factory=lambda: _rule(30.0), doc="same user (UPN case-folded, Entra object id or sender)"
    )
    same_file: RuleSettings = setting(
        default_factory=lambda: _rule(1440.0), doc="same file (SHA-256, SHA-1, URL, name) or message id"
    )
    same_device: RuleSettings = setting(
        default_factory=lambda: _rule(60.0), doc="same device (Defender device id or host name)"
    )
    same_incident: RuleSettings = setting(default_factory=lambda: _rule(0.0), doc="same Defender incident")

    def rules(self) -> dict[str, RuleSettings]:
        """The rules by name, in evaluation order."""
        return {
            "same_user": self.same_user,
            "same_file": self.same_file,
            "same_device": self.same_device,
            "same_incident": self.same_incident,
        }
