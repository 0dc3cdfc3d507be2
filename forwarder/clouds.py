"""Microsoft clouds: login (Entra ID), Graph, Management Activity API and Azure Monitor hosts.

Every host is overridable per source or sink (``endpoints`` settings), so a plugin can be
pointed at the built-in emulator, a private link or a proxy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cloud:
    """The endpoints of one Microsoft cloud."""

    name: str
    login: str  # Entra ID authority host
    graph: str  # Microsoft Graph root (no version)
    management: str  # Office 365 Management Activity API root
    monitor_scope: str  # Azure Monitor (Logs Ingestion) token scope
    audit_search: bool  # whether Graph security/auditLog/queries is offered
    portal: str  # Defender XDR portal root


CLOUDS: dict[str, Cloud] = {
    "public": Cloud(
        "public",
        "https://login.microsoftonline.com",
        "https://graph.microsoft.com",
        "https://manage.office.com",
        "https://monitor.azure.com/.default",
        True,
        "https://security.microsoft.com",
    ),
    "gcc": Cloud(
        "gcc",
        "https://login.microsoftonline.com",
        "https://graph.microsoft.com",
        "https://manage-gcc.office.com",
        "https://monitor.azure.com/.default",
        False,
        "https://security.microsoft.com",
    ),
    "gcc-high": Cloud(
        "gcc-high",
        "https://login.microsoftonline.us",
        "https://graph.microsoft.us",
        "https://manage.office365.us",
        "https://monitor.azure.us/.default",
        False,
        "https://security.microsoft.us",
    ),
    "dod": Cloud(
        "dod",
        "https://login.microsoftonline.us",
        "https://dod-graph.microsoft.us",
        "https://manage.protection.apps.mil",
        "https://monitor.azure.us/.default",
        False,
        "https://security.apps.mil",
    ),
    "china": Cloud(
        "china",
        "https://login.chinacloudapi.cn",
        "https://microsoftgraph.chinacloudapi.cn",
        "https://manage.office.com",
        "https://monitor.azure.cn/.default",
        False,
        "https://security.microsoft.com",
    ),
}
