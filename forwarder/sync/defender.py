"""The Defender XDR side of the sync: read, PATCH and comment one incident over Graph through
:class:`forwarder.correlation.incidents.IncidentsApi` (token, request budget, Retry-After and
back-off on 429/5xx come from :class:`forwarder.api.ApiClient`).

Errors: 401/403 -> FatalError naming ``SecurityIncident.ReadWrite.All`` (the sync stops);
other 4xx (400 bad value, 404 gone) -> :class:`SyncRejected` (the change is dead-lettered);
429/5xx after the client's own retries, 408/409/423 -> RetriableError (retried later).
"""

from __future__ import annotations

import logging
from typing import Any

from forwarder.correlation.incidents import READ_PERMISSION, WRITE_PERMISSION, IncidentUpdate
from forwarder.errors import ConfigError
from forwarder.sync.peer import SyncRejected

#: The comment prefix that marks what dlpfwd wrote (never mirrored back).
PREFIX = "dlpfwd:"


class DefenderIncidents:
    """Graph ``security/incidents/{id}``: get, update, comment; see the module docstring."""

    def __init__(self, settings: Any, log: logging.Logger, transport: Any = None) -> None:
        from forwarder.correlation.incidents import IncidentsApi

        self.incidents = IncidentsApi(settings, log, transport=transport)
        self.api = self.incidents.api

    def _call(self, method: str, path: str, what: str, permission: str, json: Any = None) -> Any:
        """:meth:`IncidentsApi.call`; a permanent 4xx raises :class:`SyncRejected` (dead letter)."""
        return self.incidents.call(method, path, what, permission, json, permanent=SyncRejected)

    def get(self, incident_id: str) -> dict[str, Any]:
        data = self._call("GET", f"security/incidents/{incident_id}", f"get incident {incident_id}", READ_PERMISSION)
        return data if isinstance(data, dict) else {}

    def update(self, incident_id: str, values: dict[str, str]) -> dict[str, Any]:
        """PATCH the group values (status, "classification/determination", assignedTo), enums
        validated first (SyncRejected on a value Graph would refuse)."""
        cls, _, det = values.get("classification", "").partition("/")
        try:
            update = IncidentUpdate(
                status=values.get("status", ""),
                classification=cls,
                determination=det,
                assigned_to=values.get("assignedTo"),
            ).validated()
        except ConfigError as exc:  # the bad values, named
            raise SyncRejected(f"update incident {incident_id}: {exc}") from None
        body = update.body({})
        if update.assigned_to is not None:
            body["assignedTo"] = update.assigned_to  # "" unassigns (body({}) would drop it)
        data = self._call(
            "PATCH", f"security/incidents/{incident_id}", f"update incident {incident_id}", WRITE_PERMISSION, body
        )
        return data if isinstance(data, dict) else {}

    def comment(self, incident_id: str, text: str) -> None:
        body = {"@odata.type": "microsoft.graph.security.alertComment", "comment": text}
        self._call(
            "POST",
            f"security/incidents/{incident_id}/comments",
            f"comment on incident {incident_id}",
            WRITE_PERMISSION,
            body,
        )

    def close(self) -> None:
        self.incidents.close()
