"""Settings of the ``servicenow`` sink (``[[sinks]] type = "servicenow"``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from forwarder.settings import HttpSettings, Secret, setting

DEFAULT_IMPACT = {"high": "1", "medium": "2", "low": "3", "informational": "3", "unknown": "3"}
DEFAULT_URGENCY = {"high": "2", "medium": "2", "low": "2", "informational": "3", "unknown": "3"}
DEFAULT_CREATE_ONLY = ["assignment_group", "assigned_to", "caller_id", "category", "subcategory", "contact_type"]


@dataclass
class ServiceNowSettings:
    """One ticket per Defender incident (or per alert/event) in a ServiceNow table, kept up to date."""

    instance_url: str = setting(doc="instance base URL, e.g. https://contoso.service-now.com", url=("https",))
    table: str = setting("incident", doc="table to write: incident, sn_si_incident (Security Incident Response)...")
    auth: str = setting(
        "basic", doc="basic (username + password) or oauth (client credentials)", choices=("basic", "oauth")
    )
    username: str = setting("", doc="basic auth: the integration user (needs itil or sn_si.analyst on the table)")
    password: Secret | None = setting(None, doc="basic auth: that user's password (${ENV} or file:)")
    client_id: str = setting("", doc="oauth: client id of the OAuth application registry entry")
    client_secret: Secret | None = setting(None, doc="oauth: its client secret (${ENV} or file:)")
    token_url: str = setting("", doc="oauth: token endpoint (default {instance_url}/oauth_token.do)", url=("https",))
    group_by: str = setting(
        "incident",
        doc="incident: one ticket per Defender incident (alerts without one get their own); event: one per event",
        choices=("incident", "event"),
    )
    correlation_prefix: str = setting("dlpfwd", doc="prefix of the correlation_id that links a ticket to its group")
    fields: dict[str, str] = setting(
        default_factory=dict, doc="ticket field templates over event fields; overrides the defaults, '' removes one"
    )
    create_only: list[str] = setting(
        default_factory=lambda: list(DEFAULT_CREATE_ONLY),
        doc="fields set when the ticket is created and never overwritten by updates (analysts own them)",
    )
    impact: dict[str, str] = setting(
        default_factory=lambda: dict(DEFAULT_IMPACT), doc="Defender severity -> ServiceNow impact (1 high .. 3 low)"
    )
    urgency: dict[str, str] = setting(
        default_factory=lambda: dict(DEFAULT_URGENCY), doc="Defender severity -> ServiceNow urgency (1 high .. 3 low)"
    )
    work_notes: bool = setting(True, doc="add a work note when dlpfwd updates a ticket or links another alert to it")
    http: HttpSettings = field(default_factory=HttpSettings)
