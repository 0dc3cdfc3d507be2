"""A third-party plugin package, built and installed like any other, is listed by
``dlpfwd plugins`` and receives events from ``dlpfwd run --once``; a plugin that raises
on import is reported by name and the others still run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent / "example_plugin"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the example package and install it into a private --target directory."""
    work = tmp_path_factory.mktemp("third_party")
    source = work / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    target = work / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(target.glob("example_dlpfwd_sink-*.dist-info"))
    return target


def dlpfwd(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("DLPFWD_LOAD_PLUGINS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    code = "import sys; from forwarder.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_plugins_lists_the_third_party_sink_and_reports_the_broken_one(installed: Path, tmp_path: Path) -> None:
    proc = dlpfwd(installed, "plugins", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert ["sink", "example", "0.3.1", "example_dlpfwd_sink.sink"] in rows
    broken = [r for r in rows if r[:2] == ["FAILED", "example_broken"]]
    assert broken and "example_dlpfwd_sink.broken" in broken[0]
    assert "cannot be imported (on purpose)" in proc.stdout
    # the built-ins are still there
    assert any(r[:2] == ["sink", "file"] for r in rows)
    strict = dlpfwd(installed, "--strict-plugins", "plugins", cwd=tmp_path)
    assert strict.returncode == 3


def test_run_once_delivers_to_the_third_party_sink(installed: Path, tmp_path: Path) -> None:
    pytest.importorskip("forwarder.runtime")
    records = tmp_path / "records.jsonl"
    records.write_text(
        "".join(
            f'{{"kind": "sample", "data": {{"id": "ev-{i}", "severity": "high", "title": "event {i}"}}}}\n'
            for i in range(5)
        )
    )
    out = tmp_path / "delivered.txt"
    config = tmp_path / "dlpfwd.toml"
    config.write_text(
        f"""
[forwarder]
state_dir = "{tmp_path / "state"}"
plugins = ["sample", "example_sink", "example_broken"]

[[sources]]
name = "replay"
type = "sample"
path = "{records}"

[[sinks]]
name = "third-party"
type = "example"
path = "{out}"
prefix = "> "
"""
    )
    proc = dlpfwd(installed, "--config", str(config), "run", "--once", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "plugin example_broken (example_dlpfwd_sink.broken) failed to load" in proc.stderr
    lines = out.read_text().splitlines()
    assert sorted(lines) == sorted(f"> ev-{i}\thigh\tevent {i}" for i in range(5))
