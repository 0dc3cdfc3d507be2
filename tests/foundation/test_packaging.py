"""packaging/systemd and packaging/container: static checks (no systemd or container engine here)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from forwarder.config import load_config
from forwarder.plugins import PluginHost

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
STATE_DIR = "/var/lib/dlpfwd"


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((PACKAGING / "systemd" / "dlpfwd.service").read_text(encoding="utf-8"))
    return parser


def _instructions() -> list[tuple[str, str]]:
    text = (PACKAGING / "container" / "Containerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


def test_systemd_unit_runs_dlpfwd_as_a_dedicated_user_with_its_state_dir() -> None:
    service = _unit()["Service"]
    assert re.fullmatch(r"\S*/dlpfwd run", service["ExecStart"]), service["ExecStart"]
    assert service["User"] == "dlpfwd" and service["User"] != "root"
    assert f"/var/lib/{service['StateDirectory']}" == STATE_DIR
    assert service["Restart"] in {"on-failure", "always"}
    assert "2" in service["RestartPreventExitStatus"].split()  # a configuration error is not retried
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert int(service["TimeoutStopSec"]) > 30  # above the default shutdown_deadline
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def test_container_runs_dlpfwd_run_as_non_root_with_a_state_volume() -> None:
    instructions = _instructions()
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert [arg for op, arg in instructions if op == "ENTRYPOINT"][-1] == '["dlpfwd"]'
    assert [arg for op, arg in instructions if op == "CMD"][-1] == '["run"]'
    assert any(STATE_DIR in arg for op, arg in instructions if op == "VOLUME")
    assert any("DLPFWD_CONFIG=/etc/dlpfwd/dlpfwd.toml" in arg for op, arg in instructions if op == "ENV")


@pytest.mark.parametrize("example", ["systemd/dlpfwd.toml.example", "container/dlpfwd.toml.example"])
def test_example_configurations_are_valid_and_use_the_packaged_state_dir(
    example: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLPFWD_CLIENT_SECRET", "example-secret-value")
    host = PluginHost()
    host.load_module("management_activity", "sources.management_activity")
    host.load_module("file", "sinks.file")
    host.collect()
    config = load_config(PACKAGING / example, host)
    assert str(config.forwarder.state_dir) == STATE_DIR


def test_packaging_readme_lists_every_directory() -> None:
    text = (PACKAGING / "README.md").read_text(encoding="utf-8")
    for directory in sorted(p.name for p in PACKAGING.iterdir() if p.is_dir()):
        assert f"`{directory}/`" in text, directory
