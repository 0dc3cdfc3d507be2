"""Through the real runtime: sample source -> spool -> servicenow sink -> emulator, including a
kill -9 of the forwarder after ServiceNow committed the ticket but before the reply arrived."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from forwarder.schema import to_dict

from .conftest import TENANT, alert, incident

PASSWORD_ENV = "DLPFWD_TEST_SN_PASSWORD"


def write_records(path: Path, *events) -> None:
    with path.open("ab") as f:
        for event in events:
            f.write(orjson.dumps({"kind": "sample", "data": to_dict(event)}) + b"\n")


def write_config(tmp_path: Path, server) -> Path:
    records = tmp_path / "records.jsonl"
    records.touch()
    config = tmp_path / "dlpfwd.toml"
    config.write_text(
        f"""
[forwarder]
state_dir = "{tmp_path / "state"}"

[[sources]]
name = "drill"
type = "sample"
path = "{records}"
tenant_id = "{TENANT}"

[[sinks]]
name = "snow"
type = "servicenow"
instance_url = "{server.url}"
username = "dlpfwd"
password = "${{{PASSWORD_ENV}}}"
[sinks.http]
ca_bundle = "{server.ca_file}"
[sinks.filter]
kinds = ["incident", "alert"]
[sinks.retry]
initial = 0.05
maximum = 0.2
"""
    )
    return config


def run_once(config: Path):
    from forwarder.config import load_config
    from forwarder.plugins import PluginHost
    from forwarder.runtime import Forwarder

    host = PluginHost().load()
    fw = Forwarder(load_config(config, host), host)
    try:
        return fw.run_once()
    finally:
        fw.close()


@pytest.fixture(autouse=True)
def _password(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "pa55word")


def test_incident_and_its_alerts_become_one_ticket_updated_in_place(tmp_path, server, app):
    config = write_config(tmp_path, server)
    records = tmp_path / "records.jsonl"
    write_records(records, alert("da1"), incident(), alert("da2"))
    result = run_once(config)
    assert result.ok, result
    (ticket,) = app.table("incident")
    assert ticket["correlation_id"] == f"dlpfwd:{TENANT}:incident:42"
    assert ticket["impact"] == "1" and "Finance DLP" in ticket["description"]
    write_records(records, incident(updated="2026-11-23T12:00:00Z", severity="medium"))
    assert run_once(config).ok
    (ticket,) = app.table("incident")
    assert ticket["impact"] == "2"
    posts = [r for r in app.requests if r[0] == "POST"]
    assert len(posts) == 1


def test_kill_9_after_the_ticket_was_committed_makes_no_second_ticket(tmp_path, server, app):
    config = write_config(tmp_path, server)
    write_records(tmp_path / "records.jsonl", incident())
    committed, release = threading.Event(), threading.Event()
    original = app.create

    def commit_then_hang(request):
        response = original(request)
        committed.set()
        release.wait(30)
        return response

    app.routes = [(m, p, commit_then_hang if h == original else h) for m, p, h in app.routes]
    env = {**os.environ, PASSWORD_ENV: "pa55word"}
    code = "import sys; from forwarder.cli import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--config", str(config), "run", "--once"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not committed.is_set() and proc.poll() is None and time.monotonic() < deadline:
            committed.wait(0.1)
        assert committed.is_set(), proc.stderr.read().decode() if proc.poll() is not None else "no POST within 60 s"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert len(app.table("incident")) == 1
    app.routes = [(m, p, original if h == commit_then_hang else h) for m, p, h in app.routes]
    result = run_once(config)
    assert result.ok, result
    (ticket,) = app.table("incident")
    assert ticket["correlation_id"] == f"dlpfwd:{TENANT}:incident:42"
    assert len([r for r in app.requests if r[0] == "POST"]) == 1
    assert any(r[0] == "PATCH" for r in app.requests)  # the redelivered event updated the adopted ticket
