"""Settings of the ``webhook`` sink (``[[sinks]] type = "webhook"``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from forwarder.settings import HttpSettings, Secret, setting


@dataclass
class WebhookSettings:
    """POST DLP events as JSON to any HTTPS endpoint (Jira, Teams, PagerDuty, a SOAR), signed."""

    url: str = setting(doc="the receiver's URL", url=("https",))
    secret: Secret | None = setting(
        None, doc="HMAC-SHA256 signing key (${ENV} or file:); adds X-Dlpfwd-Timestamp and X-Dlpfwd-Signature"
    )
    bearer_token: Secret | None = setting(None, doc="sent as Authorization: Bearer <token> when set")
    mode: str = setting(
        "event",
        doc="event: one POST per event (a JSON object); array: one POST per batch (a JSON array)",
        choices=("event", "array"),
    )
    fields: list[str] = setting(
        default_factory=list,
        doc="event fields to send, dotted (user.upn, policies[].name); empty: the whole event except raw",
    )
    rename: dict[str, str] = setting(default_factory=dict, doc="field -> key name in the payload")
    include_detected_values: bool = setting(
        False, doc="send sensitive_types[].detected_values (already dropped/masked/hashed by the policy)"
    )
    headers: dict[str, str] = setting(default_factory=dict, doc="extra request headers (not for secrets)")
    http: HttpSettings = field(default_factory=HttpSettings)
