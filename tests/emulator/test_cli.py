"""``dlpfwd emulator`` in its own process and ``dlpfwd demo`` end to end, offline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

DLPFWD = [sys.executable, "-c", "import sys; from forwarder.cli import main; sys.exit(main())"]


def test_emulator_command_serves_until_sigterm(tmp_path):
    info = tmp_path / "info.json"
    proc = subprocess.Popen(
        [*DLPFWD, "emulator", "--port", "0", "--state-dir", str(tmp_path / "emu"), "--info-file", str(info)]
        + ["--audit-records", "100", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not info.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert info.exists(), proc.stderr.read() if proc.poll() is not None and proc.stderr else "no info file"
        data = orjson.loads(info.read_bytes())
        assert oct(info.stat().st_mode & 0o777) == "0o600"
        import ssl

        with httpx.Client(verify=ssl.create_default_context(cafile=data["ca_file"])) as client:
            r = client.post(
                f"{data['url']}/{data['tenant_id']}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": data["client_id"],
                    "client_secret": data["client_secret"],
                    "scope": "https://manage.office.com/.default",
                },
            )
            assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0
        assert data["url"] in out and data["client_id"] in out and "emulator stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_demo(demo_dir: Path) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    """``dlpfwd demo`` (200 records, seed 2) offline into ``demo_dir``: the process and the events it wrote."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = "*"
    r = subprocess.run(
        [*DLPFWD, "demo", "--dir", str(demo_dir), "--audit-records", "200", "--seed", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=demo_dir.parent,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r, [orjson.loads(line) for p in sorted((demo_dir / "out").glob("*.jsonl")) for line in p.open("rb")]


def test_demo_runs_end_to_end_offline(tmp_path):
    demo_dir = tmp_path / "dlpfwd-demo"
    r, events = run_demo(demo_dir)
    config = (demo_dir / "dlpfwd.toml").read_text()
    assert "management_activity" in config and "graph_security" in config
    assert "emu~" not in config  # the secret sits in a 0600 file, referenced as file:
    assert oct((demo_dir / "client-secret").stat().st_mode & 0o777) == "0o600"
    kinds = {e["kind"] for e in events}
    assert {"audit", "alert", "incident"} <= kinds
    audit_ids = {e["id"] for e in events if e["kind"] == "audit"}
    assert len(audit_ids) == 200
    assert "Events by workload" in r.stdout and "Events by policy" in r.stdout
    assert str(demo_dir / "dlpfwd.toml") in r.stdout.replace("\n", "")
    # sensitive values are masked by the demo policy: no sample card number in clear
    text = b"".join(p.read_bytes() for p in (demo_dir / "out").glob("*.jsonl"))
    assert b"4111 1111 1111 1111" not in text and b"078-05-1120" not in text
    # a second run starts fresh and gives the same audit records (same seed)
    _, events2 = run_demo(demo_dir)
    assert {e["id"] for e in events2 if e["kind"] == "audit"} == audit_ids
    assert Path(demo_dir / "state").exists()


def test_demo_names_a_missing_part_instead_of_crashing(tmp_path, monkeypatch, capsys):
    import argparse
    import importlib

    from emulators.tenant import demo

    real = importlib.import_module

    def fake(name: str, package: str | None = None):
        if name == "sources.graph_security":
            raise ImportError("No module named 'sources.graph_security'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)
    args = argparse.Namespace(
        dir=str(tmp_path / "demo"),
        keep_state=False,
        seed=1,
        audit_records=20,
        days=1.0,
        records_per_blob=10,
        alert_every=10,
    )
    assert demo.run_demo(args) == 1
    out = capsys.readouterr().out
    assert "the graph_security source" in out and "No module named" in out
    assert (tmp_path / "demo" / "dlpfwd.toml").exists()


def test_every_fault_knob_flag_sets_its_knob(tmp_path):
    """``--help`` lists the fault flags by name only; each still parses into its FaultConfig knob."""
    import argparse
    from dataclasses import fields

    from emulators.tenant import FaultConfig
    from emulators.tenant.plugin import FAULT_FLAGS, build_emulator, configure_emulator

    parser = argparse.ArgumentParser()
    configure_emulator(parser)
    knobs = {f.name for f in fields(FaultConfig)}
    assert {name for name, _ in FAULT_FLAGS} == knobs - {"retry_after"}
    values = {name: i + 1 if kind is int else (i + 1) / 100 for i, (name, kind) in enumerate(FAULT_FLAGS)}
    argv = ["--audit-records", "10"]
    for name, value in values.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    emu = build_emulator(parser.parse_args(argv), tmp_path)
    assert {name: getattr(emu.faults, name) for name in values} == values
    help_text = parser.format_help()
    assert all("--" + name.replace("_", "-") in help_text for name, _ in FAULT_FLAGS)
