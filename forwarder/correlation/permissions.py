"""The application permissions a configuration needs, and a script that grants them.

Permission ids are NOT hard-coded: the generated scripts resolve each permission name to its
app role id from the resource's own service principal in the tenant (Microsoft Graph
``00000003-0000-0000-c000-000000000000``, Office 365 Management APIs
``c5393580-f805-4401-95e8-94b7a6ef2fc2``), which is the authoritative source, and fail loudly
on a name the resource does not publish.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GRAPH = ("00000003-0000-0000-c000-000000000000", "Microsoft Graph")
MANAGEMENT = ("c5393580-f805-4401-95e8-94b7a6ef2fc2", "Office 365 Management APIs")


@dataclass(frozen=True)
class Need:
    """One application permission, on one resource, for one feature of the configuration."""

    resource_app_id: str
    resource: str
    permission: str
    feature: str


def needs(config: Any) -> list[Need]:
    """Every permission the enabled features of ``config`` need (sorted, without duplicates)."""
    out: set[Need] = set()
    for so in config.sources:
        if not so.options.enabled:
            continue
        s = so.settings
        if so.type == "graph_security":
            if getattr(s, "alerts", True):
                out.add(Need(*GRAPH, "SecurityAlert.Read.All", f"source {so.name}: alerts_v2"))
            if getattr(s, "incidents", True):
                out.add(Need(*GRAPH, "SecurityIncident.Read.All", f"source {so.name}: incidents"))
        elif so.type == "management_activity":
            out.add(Need(*MANAGEMENT, "ActivityFeed.Read", f"source {so.name}: Activity API"))
            out.add(Need(*MANAGEMENT, "ActivityFeed.ReadDlp", f"source {so.name}: DLP records with detections"))
        elif so.type == "audit_search":
            out.add(Need(*GRAPH, "AuditLogsQuery.Read.All", f"source {so.name}: audit log queries"))
    corr = getattr(config, "correlation", None)
    if corr is not None and corr.enabled:
        for name in corr.writeback_sources:
            out.add(Need(*GRAPH, "SecurityAlert.ReadWrite.All", f"correlation write-back via {name}: alert comments"))
            out.add(Need(*GRAPH, "SecurityIncident.ReadWrite.All", f"correlation write-back via {name}: incident tags"))
    return sorted(out, key=lambda n: (n.resource, n.permission, n.feature))


def powershell_script(app_name: str, wanted: list[Need]) -> str:
    """Microsoft Graph PowerShell: create the app registration with these application
    permissions (ids resolved from each resource's service principal), then grant consent."""
    by_resource: dict[tuple[str, str], list[str]] = {}
    for n in wanted:
        perms = by_resource.setdefault((n.resource_app_id, n.resource), [])
        if n.permission not in perms:
            perms.append(n.permission)
    lines = [
        "# Requires: Install-Module Microsoft.Graph -Scope CurrentUser",
        'Connect-MgGraph -Scopes "Application.ReadWrite.All","AppRoleAssignment.ReadWrite.All"',
        '$ErrorActionPreference = "Stop"',
        "$access = @()",
        "$grants = @()",
    ]
    for (app_id, resource), perms in sorted(by_resource.items()):
        quoted = ",".join(f'"{p}"' for p in perms)
        lines += [
            f"# {resource}",
            f"$sp = Get-MgServicePrincipal -Filter \"appId eq '{app_id}'\"",
            f"$roles = @(foreach ($name in @({quoted})) {{",
            "  $role = $sp.AppRoles | Where-Object { $_.Value -eq $name -and "
            "$_.AllowedMemberTypes -contains 'Application' }",
            '  if (-not $role) { throw "' + resource + ' publishes no application permission $name" }',
            '  @{ Id = $role.Id; Type = "Role" }',
            "})",
            f'$access += @{{ ResourceAppId = "{app_id}"; ResourceAccess = $roles }}',
            "$grants += ,@($sp, $roles)",
        ]
    lines += [
        f'$app = New-MgApplication -DisplayName "{app_name}" -SignInAudience AzureADMyOrg '
        "-RequiredResourceAccess $access",
        "$appSp = New-MgServicePrincipal -AppId $app.AppId",
        "foreach ($g in $grants) { foreach ($r in $g[1]) {",
        "  New-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $appSp.Id -PrincipalId $appSp.Id "
        "-ResourceId $g[0].Id -AppRoleId $r.Id | Out-Null",
        "} }",
        '"tenant_id = $((Get-MgContext).TenantId)"',
        '"client_id = $($app.AppId)"',
        "# then add a certificate (Add-MgApplicationKey / the portal) or a secret, and reference it in dlpfwd.toml",
    ]
    return "\n".join(lines) + "\n"
