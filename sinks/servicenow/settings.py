"""Settings of the ``servicenow`` sink (``[[sinks]] type = "servicenow"``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from forwarder.settings import HttpSettings, Secret, setting

DEFAULT_IMPACT = {"high": "1", "medium": "2", "low": "3", "informational": "3", "unknown": "3"}
DEFAULT_URGENCY = {"high": "2", "medium": "2", "low": "2", "informational": "3", "unknown": "3"}
#: Ticket state -> Defender incident status, per table (``[sinks.sync] states`` overrides).
DEFAULT_STATES = {
    "incident": {
        "1": "active",
        "2": "inProgress",
        "3": "inProgress",
        "6": "resolved",
        "7": "resolved",
        "8": "resolved",
    },
    "sn_si_incident": {
        "10": "active",
        "16": "inProgress",
        "18": "inProgress",
        "19": "inProgress",
        "20": "inProgress",
        "100": "inProgress",
        "3": "resolved",
        "7": "resolved",
    },
}
#: Defender status -> ticket state written when the incident changes in Defender (``statuses``).
DEFAULT_STATUSES = {
    "incident": {"active": "1", "inProgress": "2", "resolved": "6", "redirected": "8"},
    "sn_si_incident": {"active": "10", "inProgress": "16", "resolved": "3", "redirected": "7"},
}
#: Close (resolution) code -> "classification/determination" (``close_codes``); both vocabularies
#: of the incident table and the SIR labels. Unlisted codes leave the classification unchanged.
DEFAULT_CLOSE_CODES = {
    "Solution provided": "truePositive/other",
    "Workaround provided": "truePositive/other",
    "Resolved by change": "truePositive/other",
    "Resolved by problem": "truePositive/other",
    "Resolved by request": "truePositive/other",
    "Solved (Permanently)": "truePositive/other",
    "Solved (Work Around)": "truePositive/other",
    "Solved Remotely (Permanently)": "truePositive/other",
    "Solved Remotely (Work Around)": "truePositive/other",
    "User error": "truePositive/other",
    "Resolved by caller": "informationalExpectedActivity/confirmedActivity",
    "Closed/Resolved by Caller": "informationalExpectedActivity/confirmedActivity",
    "Known error": "informationalExpectedActivity/lineOfBusinessApplication",
    "No resolution provided": "falsePositive/notEnoughDataToValidate",
    "Not Solved (Not Reproducible)": "falsePositive/notEnoughDataToValidate",
    "Investigation completed": "truePositive/other",
    "Threat mitigated": "truePositive/maliciousUserActivity",
    "False positive": "falsePositive/notMalicious",
    "Invalid vulnerability": "falsePositive/notMalicious",
}
#: Defender classification (or "classification/determination") -> close code written when the
#: incident is resolved in Defender (``classifications``); "*" is the fallback.
DEFAULT_CLASSIFICATIONS = {
    "incident": {
        "truePositive": "Solution provided",
        "informationalExpectedActivity": "Resolved by caller",
        "falsePositive": "No resolution provided",
        "*": "Solution provided",
    },
    "sn_si_incident": {
        "truePositive": "Investigation completed",
        "informationalExpectedActivity": "Investigation completed",
        "falsePositive": "False positive",
        "*": "Investigation completed",
    },
}
SYNC_FIELDS = ("status", "classification", "assignedTo")
DEFAULT_CREATE_ONLY = ["assignment_group", "assigned_to", "caller_id", "category", "subcategory", "contact_type"]


@dataclass
class SyncSettings:
    """``[sinks.sync]``: two-way status sync of the tickets with their Defender XDR incidents."""

    enabled: bool = setting(False, doc="sync ticket state, resolution, assignee and work notes with Defender XDR")
    source: str = setting(
        "", doc="graph_security source whose app updates the incidents (default: the only one configured)"
    )
    interval: float = setting(60.0, doc="seconds between two sync passes inside dlpfwd run", minimum=1)
    lookback: float = setting(
        300.0, doc="seconds re-read before the ticket cursor (clock skew, late commits)", minimum=0
    )
    states: dict[str, str] = setting(
        default_factory=dict, doc="ticket state value -> Defender status (merged over the table's defaults)"
    )
    statuses: dict[str, str] = setting(
        default_factory=dict, doc="Defender status -> ticket state value written on Defender changes (merged)"
    )
    close_codes: dict[str, str] = setting(
        default_factory=dict, doc="close code -> 'classification/determination' (merged over the defaults)"
    )
    classifications: dict[str, str] = setting(
        default_factory=dict,
        doc="Defender 'classification' or 'classification/determination' -> close code ('*' fallback; merged)",
    )
    ticket_wins: list[str] = setting(
        default_factory=lambda: ["status", "classification"],
        doc="on a conflict (both sides changed since the last sync) the ticket wins these fields, Defender the rest",
        choices=SYNC_FIELDS,
    )
    user_field: str = setting("email", doc="sys_user column holding the Defender assignee (UPN): email or user_name")
    work_notes: bool = setting(True, doc="copy analysts' work notes to the incident as comments")
    sync_assignee: bool = setting(True, doc="sync the assignee (assigned_to <-> assignedTo)")


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
    sync: SyncSettings = field(default_factory=SyncSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
