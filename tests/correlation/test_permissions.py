"""Permissions: the id table agrees with the features, the generated scripts grant those ids
(after checking them against the tenant's service principal), and ``dlpfwd check
--permissions`` names each missing permission with its feature, from a real token's roles
(tenant emulator)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulators.tenant import EmulatorConfig, TenantEmulator
from forwarder.cli import main
from forwarder.config import load_config
from forwarder.correlation.permissions import (
    APP_ROLE_IDS,
    GRAPH,
    MANAGEMENT,
    az_script,
    needs,
    powershell_script,
    satisfied,
    token_roles,
)
from forwarder.plugins import PluginHost
from tests.sources.emulated import config_text, serve

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _config_text(emu: Any, server: Any, tmp: Path, writeback: bool = True) -> str:
    graph = f'name = "graph"\ntype = "graph_security"\ngraph_url = "{server.url}"\nall_alerts = true'
    audit = f'name = "audit"\ntype = "audit_search"\ngraph_url = "{server.url}"'
    o365 = (
        f'name = "o365"\ntype = "management_activity"\nmanagement_url = "{server.url}"\n'
        f'publisher_id = "{emu.publisher_id}"'
    )
    text = config_text(emu, server, tmp, [graph, audit, o365])
    if writeback:
        text = '[correlation]\nenabled = true\nwriteback_sources = ["graph"]\n' + text
    return text


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[tuple[Any, Any, Path]]:
    emu = TenantEmulator(EmulatorConfig(seed=5, audit_records=20, days=1), state_dir=tmp_path / "emu")
    with serve(emu) as server:
        path = tmp_path / "dlpfwd.toml"
        path.write_text(_config_text(emu, server, tmp_path))
        yield emu, server, path


def test_every_feature_permission_has_a_published_id_and_every_id_a_feature(tenant: Any) -> None:
    _emu, _server, path = tenant
    wanted = needs(load_config(str(path), PluginHost().load()))
    used = {(n.resource_app_id, n.permission) for n in wanted}
    assert used == set(APP_ROLE_IDS)  # this configuration enables every feature
    for n in wanted:
        assert GUID.match(n.role_id), n
        assert n.resource_app_id in (GRAPH[0], MANAGEMENT[0]) and n.source in ("graph", "audit", "o365")
    assert len(set(APP_ROLE_IDS.values())) == len(APP_ROLE_IDS)
    # Read permissions of the sources, ReadWrite for the write-back through "graph"
    features = {(n.permission, n.feature) for n in wanted}
    assert ("SecurityAlert.ReadWrite.All", "correlation write-back via graph: alert comments") in features
    assert ("AuditLogsQuery.Read.All", "source audit: audit log queries") in features


def test_the_table_holds_the_ids_microsoft_publishes() -> None:
    # Checked against the Graph permissions reference and the Office 365 Management APIs'
    # service principal (see forwarder/correlation/permissions.py); a typo here would grant
    # the wrong permission, so the table is pinned.
    assert APP_ROLE_IDS == {
        (GRAPH[0], "SecurityAlert.Read.All"): "472e4a4d-bb4a-4026-98d1-0b0d74cb74a5",
        (GRAPH[0], "SecurityAlert.ReadWrite.All"): "ed4fca05-be46-441f-9803-1873825f8fdb",
        (GRAPH[0], "SecurityIncident.Read.All"): "45cc0394-e837-488b-a098-1918f48d186c",
        (GRAPH[0], "SecurityIncident.ReadWrite.All"): "34bf0e97-1971-4929-b999-9e2442d941d7",
        (GRAPH[0], "AuditLogsQuery.Read.All"): "5e1e9171-754d-478c-812c-f1755a9a4c2d",
        (MANAGEMENT[0], "ActivityFeed.Read"): "594c1fb6-4f81-4475-ae41-0c394909246c",
        (MANAGEMENT[0], "ActivityFeed.ReadDlp"): "4807a72c-ad38-4250-94c9-4eabfe26cd55",
    }


def test_scripts_grant_the_ids_after_checking_them_against_the_service_principal(tenant: Any, capsys: Any) -> None:
    _emu, _server, path = tenant
    wanted = needs(load_config(str(path), PluginHost().load()))
    ps = powershell_script("dlpfwd-prod", wanted)
    az = az_script("dlpfwd-prod", wanted)
    for n in wanted:
        assert f'"{n.permission}" = "{n.role_id}"' in ps
        assert f"check {n.resource_app_id} {n.permission} {n.role_id}" in az
        assert f"{n.role_id}=Role" in az
    assert "if ($role.Id -ne $id)" in ps and "New-MgServicePrincipalAppRoleAssignment" in ps
    # one permission on a resource stays one entry (no array of pairs PowerShell would flatten)
    only_audit = [n for n in wanted if n.permission == "AuditLogsQuery.Read.All"]
    assert '$wanted = [ordered]@{ "AuditLogsQuery.Read.All" = "5e1e9171-754d-478c-812c-f1755a9a4c2d" }' in (
        powershell_script("x", only_audit)
    )
    assert az.count("az ad app permission add") == 2  # one per resource
    assert "az ad app permission admin-consent" in az and 'az ad app create --display-name "dlpfwd-prod"' in az
    # the checks run before anything is created
    assert az.index("\ncheck ") < az.index("az ad app create")
    bash = shutil.which("bash")
    if bash:
        assert subprocess.run([bash, "-n"], input=az.encode(), check=False).returncode == 0
    assert main(["permissions", "--config", str(path), "--script", "az", "--app-name", "dlpfwd-prod"]) == 0
    assert capsys.readouterr().out.strip() == az.strip()
    assert main(["permissions", "--config", str(path), "--app-name", "dlpfwd-prod", "--script"]) == 0
    assert capsys.readouterr().out.strip() == ps.strip()
    assert main(["permissions", "--config", str(path)]) == 0
    assert "ed4fca05-be46-441f-9803-1873825f8fdb" in capsys.readouterr().out


def test_check_names_each_missing_permission_with_its_feature(tenant: Any, capsys: Any) -> None:
    emu, _server, path = tenant
    assert main(["check", "--permissions", "--config", str(path)]) == 0
    assert "carry all 7 application permission(s)" in capsys.readouterr().out

    emu.set_roles("https://graph.microsoft.com", ["SecurityAlert.Read.All", "SecurityIncident.Read.All"])
    emu.set_roles("https://manage.office.com", ["ActivityFeed.Read"])
    assert main(["check", "--permissions", "--config", str(path)]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("missing permission")]
    named = {
        (line.split(" (application")[0].rsplit(" ", 1)[1], line.split("needed by ")[1].split(";")[0]) for line in lines
    }
    assert named == {
        ("SecurityAlert.ReadWrite.All", "correlation write-back via graph: alert comments"),
        ("SecurityIncident.ReadWrite.All", "correlation write-back via graph: incident tags"),
        ("AuditLogsQuery.Read.All", "source audit: audit log queries"),
        ("ActivityFeed.ReadDlp", "source o365: DLP records with detections"),
    }
    assert all("id " in line and "source " in line for line in lines)


def test_readwrite_grants_read_and_unreadable_tokens_have_no_roles() -> None:
    assert satisfied("SecurityAlert.Read.All", ["SecurityAlert.ReadWrite.All"])
    assert not satisfied("SecurityAlert.ReadWrite.All", ["SecurityAlert.Read.All"])
    assert not satisfied("ActivityFeed.ReadDlp", ["ActivityFeed.Read"])
    assert token_roles("not-a-jwt") == [] and token_roles("a.!!!.c") == []


FAKE_AZ = r"""#!/usr/bin/env bash
# A stand-in for the az CLI: logs each call, answers from the app roles in $FAKE_ROLES
# ("<resource app id> <permission> <id>" lines).
echo "$*" >> "$FAKE_LOG"
if [ "$1 $2 $3" = "ad sp show" ]; then
  query=""
  while [ $# -gt 0 ]; do [ "$1" = "--query" ] && query="$2"; shift; done
  [ -z "$query" ] && exit 0
  perm=$(printf '%s' "$query" | sed -E "s/.*value=='([^']+)'.*/\1/")
  grep -F " $perm " "$FAKE_ROLES" | awk '{print $3}' | head -1
elif [ "$1 $2 $3" = "ad app create" ]; then
  echo 11111111-2222-3333-4444-555555555555
elif [ "$1 $2" = "account show" ]; then
  echo 99999999-8888-7777-6666-555555555555
fi
"""


def _run_az_script(tmp_path: Path, script: str, roles: list[tuple[str, str, str]]) -> tuple[int, str, list[str]]:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed (Debian package bash)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    az = bin_dir / "az"
    az.write_text(FAKE_AZ)
    az.chmod(0o755)
    (tmp_path / "roles").write_text("".join(f"{a} {p} {i}\n" for a, p, i in roles))
    log = tmp_path / "az.log"
    log.write_text("")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_LOG": str(log), "FAKE_ROLES": str(tmp_path / "roles")}
    done = subprocess.run([bash, "-c", script], env=env, capture_output=True, text=True, check=False, timeout=60)
    return done.returncode, done.stdout + done.stderr, log.read_text().splitlines()


def test_az_script_checks_every_id_then_creates_grants_and_consents(tenant: Any, tmp_path: Path) -> None:
    _emu, _server, path = tenant
    wanted = needs(load_config(str(path), PluginHost().load()))
    script = az_script("dlpfwd-prod", wanted)
    published = [(n.resource_app_id, n.permission, n.role_id) for n in wanted]
    code, out, calls = _run_az_script(tmp_path, script, published)
    assert code == 0, out
    assert "client_id = 11111111-2222-3333-4444-555555555555" in out
    assert "tenant_id = 99999999-8888-7777-6666-555555555555" in out
    created = next(i for i, c in enumerate(calls) if c.startswith("ad app create"))
    assert all(not c.startswith("ad app") for c in calls[:created])  # every check ran first
    granted = " ".join(c for c in calls if c.startswith("ad app permission add"))
    assert all(f"{n.role_id}=Role" in granted for n in wanted)
    assert calls[-2].startswith("ad app permission admin-consent")

    # the tenant publishes one permission under another id: nothing is created
    wrong = [
        (a, p, "00000000-0000-0000-0000-000000000000" if p == "ActivityFeed.ReadDlp" else i) for a, p, i in published
    ]
    code, out, calls = _run_az_script(tmp_path, script, wrong)
    assert code == 1 and "ActivityFeed.ReadDlp as 00000000-0000-0000-0000-000000000000" in out
    assert not any(c.startswith("ad app") for c in calls)
