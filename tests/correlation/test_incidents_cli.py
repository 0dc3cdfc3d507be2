"""``dlpfwd incidents`` against the tenant emulator over TLS: list, show, update with
validation before the call, tags kept, comments, dry run, and a read-only token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from emulators.tenant import EmulatorConfig, TenantEmulator
from forwarder.cli import main
from tests.sources.emulated import config_text, serve


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    yield from _tenant(tmp_path, None)


def _tenant(tmp_path: Path, roles: list[str] | None) -> Iterator[tuple[Any, str]]:
    cfg = EmulatorConfig(seed=5, audit_records=300, days=2, alert_every=10)
    if roles is not None:
        cfg.roles["https://graph.microsoft.com"] = roles
    emu = TenantEmulator(cfg, state_dir=tmp_path / "emu")
    with serve(emu) as server:
        source = f'name = "graph"\ntype = "graph_security"\ngraph_url = "{server.url}"'
        text = config_text(emu, server, tmp_path, [source])
        path = tmp_path / "dlpfwd.toml"
        path.write_text(text)
        yield emu, str(path)


def run(capsys: Any, config: str, *argv: str) -> tuple[int, str, str]:
    code = main(["incidents", "--config", config, *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def show(capsys: Any, config: str, ident: str) -> dict[str, Any]:
    code, out, _ = run(capsys, config, "--json", "show", ident)
    assert code == 0
    data: dict[str, Any] = orjson.loads(out)
    return data


def test_list_and_show(tenant: tuple[Any, str], capsys: Any) -> None:
    emu, config = tenant
    code, out, _ = run(capsys, config, "list", "--top", "5")
    assert code == 0
    lines = out.strip().splitlines()
    assert 1 <= len(lines) <= 5 and all(line.split("\t")[0].isdigit() for line in lines)
    ident = lines[0].split("\t")[0]
    code, out, _ = run(capsys, config, "show", ident)
    assert code == 0 and f"id: {ident}" in out and "status: active" in out


def test_update_shows_before_after_keeps_tags_and_comments(tenant: tuple[Any, str], capsys: Any) -> None:
    _, config = tenant
    ident = "2000"
    assert run(capsys, config, "update", ident, "--tag", "dlp-correlated")[0] == 0
    code, out, _ = run(
        capsys,
        config,
        "update",
        ident,
        "--status",
        "InProgress",  # case-insensitive input, camelCase sent
        "--classification",
        "truePositive",
        "--determination",
        "compromisedUser",  # the update page's spelling, sent as the CSDL's compromisedAccount
        "--assigned-to",
        "soc@contoso.com",
        "--tag",
        "itsm:INC0010001",
        "--comment",
        "Linked to ServiceNow INC0010001",
    )
    assert code == 0, out
    assert "status: 'active' -> 'inProgress'" in out
    assert "determination:" in out and "-> 'compromisedAccount'" in out
    assert "customTags: ['dlp-correlated'] -> ['dlp-correlated', 'itsm:INC0010001']" in out
    assert "comment added" in out
    after = show(capsys, config, ident)
    assert after["status"] == "inProgress" and after["assignedTo"] == "soc@contoso.com"
    assert after["customTags"] == ["dlp-correlated", "itsm:INC0010001"]
    assert [c["comment"] for c in after["comments"]] == ["Linked to ServiceNow INC0010001"]
    # the same update again changes nothing
    code, out, _ = run(capsys, config, "update", ident, "--status", "inProgress", "--tag", "itsm:INC0010001")
    assert code == 0 and "nothing to change" in out


def test_bad_enum_is_refused_before_any_call(tenant: tuple[Any, str], capsys: Any) -> None:
    emu, config = tenant
    before = show(capsys, config, "2001")
    code, _, err = run(capsys, config, "update", "2001", "--status", "closed", "--classification", "benignPositive")
    assert code == 2
    assert "--status: expected one of active, inProgress, resolved, redirected, got 'closed'" in err
    assert "--classification: expected one of" in err
    assert show(capsys, config, "2001") == before


def test_dry_run_writes_nothing(tenant: tuple[Any, str], capsys: Any) -> None:
    _, config = tenant
    before = show(capsys, config, "2002")
    code, out, _ = run(capsys, config, "update", "2002", "--status", "resolved", "--comment", "x", "--dry-run")
    assert code == 0 and 'dry run: PATCH security/incidents/2002 {"status":"resolved"}' in out
    assert show(capsys, config, "2002") == before


def test_read_only_token_gets_an_error_naming_the_permission(tmp_path: Path, capsys: Any) -> None:
    for _emu, config in _tenant(tmp_path, ["SecurityAlert.Read.All", "SecurityIncident.Read.All"]):
        code, out, err = run(capsys, config, "update", "2000", "--status", "resolved")
        assert code == 1
        assert "SecurityIncident.ReadWrite.All" in err and "403" in err
        assert show(capsys, config, "2000")["status"] == "active"


def test_permissions_from_the_configuration(tmp_path: Path, capsys: Any) -> None:
    for emu, config in _tenant(tmp_path, None):
        text = Path(config).read_text()
        text = '[correlation]\nenabled = true\nwriteback_sources = ["graph"]\n' + text
        text += f'\n[[sources]]\nname = "o365"\ntype = "management_activity"\npublisher_id = "{emu.publisher_id}"\n'
        text += f'[sources.auth]\ntenant_id = "{emu.tenant_id}"\nclient_id = "x"\nclient_secret = "y"\n'
        Path(config).write_text(text)
        assert main(["permissions", "--config", config]) == 0
        rows = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
        assert {(r[0], r[1]) for r in rows} == {
            ("Microsoft Graph", "SecurityAlert.Read.All"),
            ("Microsoft Graph", "SecurityIncident.Read.All"),
            ("Microsoft Graph", "SecurityAlert.ReadWrite.All"),
            ("Microsoft Graph", "SecurityIncident.ReadWrite.All"),
            ("Office 365 Management APIs", "ActivityFeed.Read"),
            ("Office 365 Management APIs", "ActivityFeed.ReadDlp"),
        }
        assert main(["permissions", "--config", config, "--script", "--app-name", "dlpfwd-prod"]) == 0
        script = capsys.readouterr().out
        assert "appId eq '00000003-0000-0000-c000-000000000000'" in script
        assert "appId eq 'c5393580-f805-4401-95e8-94b7a6ef2fc2'" in script
        assert '"SecurityAlert.ReadWrite.All"' in script and 'New-MgApplication -DisplayName "dlpfwd-prod"' in script
