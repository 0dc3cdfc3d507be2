"""The application permissions a configuration needs, their ids, a script that grants them,
and a check of a token's ``roles`` claim against them.

Each permission's app role id is in :data:`APP_ROLE_IDS`, as Microsoft publishes it (the ids
are the same in every tenant):

* Microsoft Graph (``00000003-0000-0000-c000-000000000000``):
  https://learn.microsoft.com/en-us/graph/permissions-reference (the "Application" identifier
  of each permission);
* Office 365 Management APIs (``c5393580-f805-4401-95e8-94b7a6ef2fc2``): the ``appRoles`` of that
  resource's service principal (``az ad sp show --id c5393580-f805-4401-95e8-94b7a6ef2fc2``);
  https://learn.microsoft.com/en-us/office/office-365-management-api/get-started-with-office-365-management-apis
  names the permissions but not their ids.

The generated scripts (Microsoft Graph PowerShell, az CLI) grant these ids and first read the
resource's own service principal in the tenant: a permission the resource does not publish,
or publishes under another id, stops the script before anything is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GRAPH = ("00000003-0000-0000-c000-000000000000", "Microsoft Graph")
MANAGEMENT = ("c5393580-f805-4401-95e8-94b7a6ef2fc2", "Office 365 Management APIs")
GRAPH_REFERENCE = "https://learn.microsoft.com/en-us/graph/permissions-reference"
MANAGEMENT_REFERENCE = (
    "https://learn.microsoft.com/en-us/office/office-365-management-api/get-started-with-office-365-management-apis"
)

#: (resource app id, permission) -> application permission (app role) id. See the module docstring.
APP_ROLE_IDS: dict[tuple[str, str], str] = {
    (GRAPH[0], "SecurityAlert.Read.All"): "472e4a4d-bb4a-4026-98d1-0b0d74cb74a5",
    (GRAPH[0], "SecurityAlert.ReadWrite.All"): "ed4fca05-be46-441f-9803-1873825f8fdb",
    (GRAPH[0], "SecurityIncident.Read.All"): "45cc0394-e837-488b-a098-1918f48d186c",
    (GRAPH[0], "SecurityIncident.ReadWrite.All"): "34bf0e97-1971-4929-b999-9e2442d941d7",
    (GRAPH[0], "AuditLogsQuery.Read.All"): "5e1e9171-754d-478c-812c-f1755a9a4c2d",
    (MANAGEMENT[0], "ActivityFeed.Read"): "594c1fb6-4f81-4475-ae41-0c394909246c",
    (MANAGEMENT[0], "ActivityFeed.ReadDlp"): "4807a72c-ad38-4250-94c9-4eabfe26cd55",
}


@dataclass(frozen=True)
class Need:
    """One application permission, on one resource, for one feature of the configuration."""

    resource_app_id: str
    resource: str
    permission: str
    feature: str
    source: str = ""  # the configured source whose app needs it

    @property
    def role_id(self) -> str:
        """The permission's app role id (:data:`APP_ROLE_IDS`)."""
        return APP_ROLE_IDS[(self.resource_app_id, self.permission)]


def needs(config: Any) -> list[Need]:
    """Every permission the enabled features of ``config`` need (sorted, without duplicates)."""
    out: set[Need] = set()
    for so in config.sources:
        if not so.options.enabled:
            continue
        s = so.settings
        if so.type == "graph_security":
            if getattr(s, "alerts", True):
                out.add(Need(*GRAPH, "SecurityAlert.Read.All", f"source {so.name}: alerts_v2", so.name))
            if getattr(s, "incidents", True):
                out.add(Need(*GRAPH, "SecurityIncident.Read.All", f"source {so.name}: incidents", so.name))
        elif so.type == "management_activity":
            out.add(Need(*MANAGEMENT, "ActivityFeed.Read", f"source {so.name}: Activity API", so.name))
            out.add(
                Need(*MANAGEMENT, "ActivityFeed.ReadDlp", f"source {so.name}: DLP records with detections", so.name)
            )
        elif so.type == "audit_search":
            out.add(Need(*GRAPH, "AuditLogsQuery.Read.All", f"source {so.name}: audit log queries", so.name))
    corr = getattr(config, "correlation", None)
    if corr is not None and corr.enabled:
        for name in corr.writeback_sources:
            feature = f"correlation write-back via {name}"
            out.add(Need(*GRAPH, "SecurityAlert.ReadWrite.All", f"{feature}: alert comments", name))
            out.add(Need(*GRAPH, "SecurityIncident.ReadWrite.All", f"{feature}: incident tags", name))
    from forwarder.sync.loop import sync_sinks  # the two-way status sync writes incidents

    graphs = [so.name for so in config.sources if so.type == "graph_security"]
    for sc in sync_sinks(config):
        name = sc.settings.sync.source or (graphs[0] if len(graphs) == 1 else "")
        feature = f"status sync of sink {sc.name}: incident status, classification, assignee, comments"
        out.add(Need(*GRAPH, "SecurityIncident.ReadWrite.All", feature, name))
    from forwarder.serve.settings import configured  # without a sync, dlpfwd serve writes incidents

    if configured(getattr(config, "serve", None)) and not sync_sinks(config):
        name = config.serve.source or (graphs[0] if len(graphs) == 1 else "")
        feature = "dlpfwd serve: inbound status changes applied to incidents"
        out.add(Need(*GRAPH, "SecurityIncident.ReadWrite.All", feature, name))
    return sorted(out, key=lambda n: (n.resource, n.permission, n.feature))


def _by_resource(wanted: list[Need]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(resource app id, resource name, [(permission, role id)]) in a stable order."""
    grouped: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for n in wanted:
        perms = grouped.setdefault((n.resource_app_id, n.resource), [])
        if (n.permission, n.role_id) not in perms:
            perms.append((n.permission, n.role_id))
    return [(app_id, resource, perms) for (app_id, resource), perms in sorted(grouped.items())]


def powershell_script(app_name: str, wanted: list[Need]) -> str:
    """Microsoft Graph PowerShell: check each permission's id against the resource's service
    principal in the tenant, create the app registration with them, grant admin consent."""
    lines = [
        "# Requires: Install-Module Microsoft.Graph -Scope CurrentUser",
        'Connect-MgGraph -Scopes "Application.ReadWrite.All","AppRoleAssignment.ReadWrite.All"',
        '$ErrorActionPreference = "Stop"',
        "$access = @()",
        "$grants = @()",
    ]
    for app_id, resource, perms in _by_resource(wanted):
        # An ordered hashtable, not an array of pairs: PowerShell flattens a one-pair @(@(a, b)).
        pairs = "; ".join(f'"{p}" = "{rid}"' for p, rid in perms)
        lines += [
            f"# {resource} (ids: {GRAPH_REFERENCE if app_id == GRAPH[0] else MANAGEMENT_REFERENCE})",
            f"$sp = Get-MgServicePrincipal -Filter \"appId eq '{app_id}'\"",
            f'if (-not $sp) {{ $sp = New-MgServicePrincipal -AppId "{app_id}" }}',
            f"$wanted = [ordered]@{{ {pairs} }}",
            "$roles = @(foreach ($name in $wanted.Keys) {",
            "  $id = $wanted[$name]",
            "  $role = $sp.AppRoles | Where-Object { $_.Value -eq $name -and "
            "$_.AllowedMemberTypes -contains 'Application' }",
            '  if (-not $role) { throw "' + resource + ' publishes no application permission $name" }',
            '  if ($role.Id -ne $id) { throw "' + resource + " publishes $name as $($role.Id), "
            'not $id as dlpfwd expects: nothing created" }',
            '  @{ Id = $id; Type = "Role" }',
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


def az_script(app_name: str, wanted: list[Need]) -> str:
    """az CLI (bash): the same as :func:`powershell_script` -- check the ids against each
    resource's service principal, create the app with them, grant admin consent."""
    lines = [
        "#!/usr/bin/env bash",
        "# Requires: az login --allow-no-subscriptions  (as an admin who may create apps and grant consent)",
        "set -euo pipefail",
        "check() {  # resource app id, permission, expected app role id",
        '  az ad sp show --id "$1" --output none 2>/dev/null || az ad sp create --id "$1" --output none',
        "  local actual",
        '  actual=$(az ad sp show --id "$1" --query '
        "\"appRoles[?value=='$2' && contains(allowedMemberTypes, 'Application')].id | [0]\" --output tsv)",
        '  if [ -z "$actual" ]; then echo "$1 publishes no application permission $2" >&2; exit 1; fi',
        '  if [ "$actual" != "$3" ]; then',
        '    echo "$1 publishes $2 as $actual, not $3 as dlpfwd expects: nothing created" >&2; exit 1',
        "  fi",
        "}",
    ]
    grouped = _by_resource(wanted)
    for app_id, resource, perms in grouped:
        lines.append(f"# {resource} (ids: {GRAPH_REFERENCE if app_id == GRAPH[0] else MANAGEMENT_REFERENCE})")
        lines += [f"check {app_id} {p} {rid}" for p, rid in perms]
    lines += [
        f'APP_ID=$(az ad app create --display-name "{app_name}" --sign-in-audience AzureADMyOrg '
        "--query appId --output tsv)",
        'az ad sp create --id "$APP_ID" --output none',
    ]
    for app_id, _resource, perms in grouped:
        roles = " ".join(f"{rid}=Role" for _p, rid in perms)
        lines.append(f'az ad app permission add --id "$APP_ID" --api {app_id} --api-permissions {roles}')
    lines += [
        'az ad app permission admin-consent --id "$APP_ID"',
        'echo "tenant_id = $(az account show --query tenantId --output tsv)"',
        'echo "client_id = $APP_ID"',
        '# then add a certificate (az ad app credential reset --id "$APP_ID" --cert @cert.pem) or a secret,',
        "# and reference it in dlpfwd.toml",
    ]
    return "\n".join(lines) + "\n"


def token_roles(token: str) -> list[str]:
    """The ``roles`` claim of a JWT access token, read without verifying it (only to tell the
    operator what is missing; never a security decision). [] for anything unreadable."""
    import base64

    import orjson

    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return []
    roles = claims.get("roles") if isinstance(claims, dict) else None
    return [r for r in roles if isinstance(r, str)] if isinstance(roles, list) else []


def satisfied(permission: str, roles: list[str]) -> bool:
    """Whether ``roles`` grant ``permission`` (a ``.ReadWrite.`` role grants its ``.Read.``)."""
    return permission in roles or permission.replace(".Read.", ".ReadWrite.") in roles


def missing_permissions(config: Any, tokens: Any = None) -> tuple[list[Need], list[str]]:
    """The needs of ``config`` that the apps' tokens do not carry, and the errors of tokens
    that could not be had. One token per source app and resource (Graph, Management API)
    from ``tokens(source_config, scope)`` (default: the source's own auth settings)."""
    from forwarder.api import app_share
    from forwarder.auth import TokenProvider, cloud_of

    def default_tokens(so: Any, scope: str) -> str:
        s = so.settings  # the source's own provider (app_share): tokens it already has are reused
        provider = app_share(s).tokens(lambda: TokenProvider(s.auth, s.http))
        return str(provider.token(scope))

    get = tokens or default_tokens
    wanted = needs(config)
    by_source: dict[tuple[str, str], list[Need]] = {}
    for n in wanted:
        by_source.setdefault((n.source, n.resource_app_id), []).append(n)
    out: list[Need] = []
    errors: list[str] = []
    for (source, app_id), group in sorted(by_source.items()):
        so = next((s for s in config.sources if s.name == source), None)
        if so is None or not hasattr(so.settings, "auth"):
            errors.append(f"{group[0].feature}: {source!r} is not a configured source with an app")
            continue
        cloud = cloud_of(so.settings.auth)
        root = cloud.graph if app_id == GRAPH[0] else cloud.management
        try:
            roles = token_roles(get(so, root.rstrip("/") + "/.default"))
        except Exception as exc:  # noqa: BLE001 - reported, the check goes on with the next app
            errors.append(f"source {source}: no token for {group[0].resource}: {type(exc).__name__}: {exc}")
            continue
        out.extend(n for n in group if not satisfied(n.permission, roles))
    return out, errors


def print_missing(config: Any, tokens: Any = None) -> bool:
    """``dlpfwd check --permissions``: one line per missing permission (on stderr, with the
    feature that needs it and its id) or token failure; True when nothing is missing."""
    import sys

    from forwarder.logs import redact

    lacking, errors = missing_permissions(config, tokens)
    for n in lacking:
        print(
            redact(
                f"missing permission: {n.resource} {n.permission} (application, id {n.role_id}), "
                f"needed by {n.feature}; grant it to the app of source {n.source} and give admin consent"
            ),
            file=sys.stderr,
        )
    for e in errors:
        print(redact(f"permissions not checked: {e}"), file=sys.stderr)
    needed = len(needs(config)) if not lacking and not errors else 0
    if needed:
        print(f"permissions: the apps' tokens carry all {needed} application permission(s) needed")
    return not lacking and not errors
