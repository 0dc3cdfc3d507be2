"""Defender XDR incidents over Microsoft Graph: list, show, update (status, classification,
determination, assigned-to, tags) and comment, with the enum values checked before the call.

Enum spellings are those of the Graph v1.0 CSDL (what the service accepts). The update pages'
older spellings of four determinations are accepted as input and sent in the CSDL form:
``compromisedUser`` -> ``compromisedAccount``, ``clean`` -> ``notMalicious``,
``insufficientData`` -> ``notEnoughDataToValidate``, ``confirmedUserActivity`` ->
``confirmedActivity`` (a 2026 docs PR reports the old spelling breaking the update). Input is
case-insensitive (the docs' examples use PascalCase).

Tags: ``customTags`` is replaced as a whole by a PATCH, so the current tags are read first and
the new list keeps them (``add_tags`` appended, ``remove_tags`` removed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forwarder.errors import ConfigError

READ_PERMISSION = "SecurityIncident.Read.All"
WRITE_PERMISSION = "SecurityIncident.ReadWrite.All"

#: Writable incident statuses (incidentStatus; ``awaitingAction`` is evolvable and set by Defender Experts).
STATUSES = ("active", "inProgress", "resolved", "redirected")
CLASSIFICATIONS = ("unknown", "falsePositive", "truePositive", "informationalExpectedActivity")
DETERMINATIONS = (
    "unknown",
    "apt",
    "malware",
    "securityPersonnel",
    "securityTesting",
    "unwantedSoftware",
    "other",
    "multiStagedAttack",
    "compromisedAccount",
    "phishing",
    "maliciousUserActivity",
    "notMalicious",
    "notEnoughDataToValidate",
    "confirmedActivity",
    "lineOfBusinessApplication",
)
DETERMINATION_ALIASES = {
    "compromiseduser": "compromisedAccount",
    "clean": "notMalicious",
    "insufficientdata": "notEnoughDataToValidate",
    "confirmeduseractivity": "confirmedActivity",
}
#: Fields shown before/after an update.
SHOWN = ("status", "classification", "determination", "assignedTo", "customTags")


def canonical(value: str, allowed: tuple[str, ...], what: str, aliases: dict[str, str] | None = None) -> str:
    """``value`` in its Graph spelling; ConfigError naming the allowed values otherwise."""
    lowered = value.strip().lower()
    for v in allowed:
        if v.lower() == lowered:
            return v
    if aliases and lowered in aliases:
        return aliases[lowered]
    raise ConfigError([f"{what}: expected one of {', '.join(allowed)}, got {value!r}"])


@dataclass
class IncidentUpdate:
    """What ``dlpfwd incidents update`` asks for; ``body(before)`` is the PATCH body."""

    status: str = ""
    classification: str = ""
    determination: str = ""
    assigned_to: str | None = None
    add_tags: list[str] = field(default_factory=list)
    remove_tags: list[str] = field(default_factory=list)
    comment: str = ""

    def validated(self) -> IncidentUpdate:
        """A copy with every enum in its Graph spelling; ConfigError listing every bad value."""
        problems: list[str] = []
        out = IncidentUpdate(
            assigned_to=self.assigned_to,
            add_tags=list(self.add_tags),
            remove_tags=list(self.remove_tags),
            comment=self.comment,
        )
        for name, allowed, aliases in (
            ("status", STATUSES, None),
            ("classification", CLASSIFICATIONS, None),
            ("determination", DETERMINATIONS, DETERMINATION_ALIASES),
        ):
            value = getattr(self, name)
            if value:
                try:
                    setattr(out, name, canonical(value, allowed, f"--{name}", aliases))
                except ConfigError as exc:
                    problems.extend(exc.problems)
        if any(not t.strip() for t in self.add_tags):
            problems.append("--tag: a tag cannot be empty")
        if problems:
            raise ConfigError(problems)
        return out

    def body(self, before: dict[str, Any]) -> dict[str, Any]:
        """The PATCH body: only what changes; tags keep the incident's current ones."""
        body: dict[str, Any] = {}
        if self.status and self.status != before.get("status"):
            body["status"] = self.status
        if self.classification and self.classification != before.get("classification"):
            body["classification"] = self.classification
        if self.determination and self.determination != before.get("determination"):
            body["determination"] = self.determination
        if self.assigned_to is not None and self.assigned_to != (before.get("assignedTo") or ""):
            body["assignedTo"] = self.assigned_to
        if self.add_tags or self.remove_tags:
            current = [t for t in before.get("customTags") or [] if isinstance(t, str)]
            removed = {t.casefold() for t in self.remove_tags}
            tags = [t for t in current if t.casefold() not in removed]
            for t in self.add_tags:
                if t.casefold() not in {x.casefold() for x in tags}:
                    tags.append(t)
            if tags != current:
                body["customTags"] = tags
        return body


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, before, after) for each shown field that differs."""
    return [(f, before.get(f), after.get(f)) for f in SHOWN if before.get(f) != after.get(f)]


class IncidentsApi:
    """Graph ``security/incidents`` for one configured ``graph_security`` source's app.

    ``settings`` is that source's settings object: the token provider and request budget are the
    source's own (:func:`forwarder.api.app_share`), so the source, the write-back and the status
    sync of one ``dlpfwd run`` stay within its ``requests_per_minute`` together."""

    def __init__(self, settings: Any, log: logging.Logger, transport: Any = None) -> None:
        from forwarder.api import ApiClient, app_share
        from forwarder.auth import TokenProvider, cloud_of

        the_cloud = cloud_of(settings.auth)
        root = (settings.graph_url or the_cloud.graph).rstrip("/")
        share = app_share(settings)
        self.api = ApiClient(
            base_url=f"{root}/{settings.api_version}",
            tokens=share.tokens(lambda: TokenProvider(settings.auth, settings.http)),
            scope=the_cloud.graph.rstrip("/") + "/.default",
            http=settings.http,
            log=log,
            budget=share.budget(settings.requests_per_minute),
            headers={"Prefer": "include-unknown-enum-members"},
            max_wait=settings.max_retry_wait,
            transport=transport,
            what="dlpfwd incidents",
        )

    def call(
        self,
        method: str,
        path: str,
        what: str,
        permission: str,
        json: Any = None,
        *,
        params: dict[str, Any] | None = None,
        permanent: Callable[[str], Exception] | None = None,
    ) -> Any:
        """One Graph call (token, budget, retries: :meth:`forwarder.api.ApiClient.request`); its
        JSON body, ``{}`` when empty. Errors (:meth:`forwarder.api.ApiClient.raise_for`):
        401/403 FatalError naming ``permission``; 408/409/423/429/5xx after the client's retries
        RetriableError; any other 4xx ``permanent(message)`` -- the write-back's dead letter,
        the sync's rejection -- or FatalError when not given."""
        import orjson

        response = self.api.request(method, path, what=what, json=json, params=params)
        self.api.raise_for(response, what, permission, permanent=permanent)
        return orjson.loads(response.content) if response.content else {}

    def incidents(self, status: str = "", top: int = 20) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"$top": str(top), "$orderby": "lastUpdateDateTime desc"}
        if status:
            params["$filter"] = f"status eq '{status}'"
        data = self.call("GET", "security/incidents", "list incidents", READ_PERMISSION, params=params)
        value = data.get("value", []) if isinstance(data, dict) else []
        return [v for v in value if isinstance(v, dict)]

    def get(self, incident_id: str) -> dict[str, Any]:
        data = self.call("GET", f"security/incidents/{incident_id}", f"get incident {incident_id}", READ_PERMISSION)
        return data if isinstance(data, dict) else {}

    def update(self, incident_id: str, body: dict[str, Any]) -> dict[str, Any]:
        data = self.call(
            "PATCH", f"security/incidents/{incident_id}", f"update incident {incident_id}", WRITE_PERMISSION, json=body
        )
        return data if isinstance(data, dict) else {}

    def comment(self, incident_id: str, text: str) -> list[dict[str, Any]]:
        body = {"@odata.type": "microsoft.graph.security.alertComment", "comment": text}
        data = self.call(
            "POST",
            f"security/incidents/{incident_id}/comments",
            f"comment on incident {incident_id}",
            WRITE_PERMISSION,
            json=body,
        )
        value = data.get("value", []) if isinstance(data, dict) else []
        return [v for v in value if isinstance(v, dict)]

    def close(self) -> None:
        self.api.close()
