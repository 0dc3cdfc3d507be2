"""Normalizers: pure functions turning one raw Microsoft record into common-schema events.

* :mod:`sources.normalize.management_activity` -- Management Activity API / unified audit log
  DLP records (Exchange, SharePoint, OneDrive, Teams, Endpoint; rule match, undo, info,
  override, false positive), and the Graph audit-log-query wrapper around them.
* :mod:`sources.normalize.graph` -- Graph Security ``alerts_v2`` alerts (with evidence) and
  incidents.

Normalizers never do I/O; they read defensively (case-insensitive keys, strings or numbers,
JSON-in-a-string) and raise :class:`forwarder.errors.MalformedRecord` only for a record that
has no identity at all.
"""

#: Record kinds, as ``RawRecord.kind`` names them.
KIND_O365_AUDIT = "o365_audit"  # a Management Activity API record
KIND_GRAPH_AUDIT = "graph_audit_record"  # a Graph security/auditLog/queries record (wraps auditData)
KIND_GRAPH_ALERT = "graph_alert"  # a Graph security alerts_v2 alert
KIND_GRAPH_INCIDENT = "graph_incident"  # a Graph security incident
