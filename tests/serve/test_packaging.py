"""packaging/systemd/dlpfwd-serve.service and the container's ``serve`` entry (static checks;
``systemd-analyze verify`` when it is installed)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((PACKAGING / "systemd" / name).read_text(encoding="utf-8"))
    return parser


def test_serve_unit_runs_dlpfwd_serve_as_the_dlpfwd_user_on_the_shared_state_dir() -> None:
    serve, run = _unit("dlpfwd-serve.service")["Service"], _unit("dlpfwd.service")["Service"]
    assert re.fullmatch(r"\S*/dlpfwd serve", serve["ExecStart"]), serve["ExecStart"]
    assert serve["ExecStartPre"].endswith("/dlpfwd check")
    for key in ("User", "Group", "StateDirectory", "WorkingDirectory", "Environment", "EnvironmentFile"):
        assert serve[key] == run[key], key
    assert "2" in serve["RestartPreventExitStatus"].split()
    assert serve["SocketBindAllow"] == "tcp:8443" and serve["SocketBindDeny"] == "any"  # [serve] port default
    assert serve["AmbientCapabilities"] == "" and serve["CapabilityBoundingSet"] == ""


def test_serve_unit_is_hardened_at_least_like_the_forwarder_unit() -> None:
    serve, run = _unit("dlpfwd-serve.service")["Service"], _unit("dlpfwd.service")["Service"]
    hardening = [k for k in run if k.startswith(("Protect", "Private", "Restrict", "NoNew", "Lock", "SystemCall"))]
    assert len(hardening) > 10
    for key in hardening:
        assert serve.get(key) == run[key], key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_serve_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = (PACKAGING / "systemd" / "dlpfwd-serve.service").read_text(encoding="utf-8")
    unit = tmp_path / "dlpfwd-serve.service"
    unit.write_text(text.replace("/opt/dlpfwd/bin/dlpfwd", "/bin/true"), encoding="utf-8")  # binaries must exist
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_container_exposes_the_serve_port_and_documents_serve() -> None:
    text = (PACKAGING / "container" / "Containerfile").read_text(encoding="utf-8")
    assert re.search(r"^EXPOSE 8443$", text, flags=re.M)
    assert re.search(r"^#.* dlpfwd serve --bind 0\.0\.0\.0", text, flags=re.M)  # the entry point takes 'serve'
