"""Registration through the entry points, settings validation, and the emulator command."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time

import httpx

from forwarder.plugins import PluginHost
from forwarder.settings import build
from sinks.sentinel.sink import SentinelSettings, SentinelSink
from tests.sentinel.helpers import DCR, Issuer


def test_entry_points_register_the_sink_and_the_command():
    host = PluginHost().load(allow=["sentinel", "emulator_logs_ingestion"])
    assert not host.failures, host.failures
    assert host.sinks["sentinel"] is SentinelSink
    assert "logs-ingestion-emulator" in host.commands


def test_settings_problems_are_reported_with_key_paths():
    problems: list[str] = []
    build(
        SentinelSettings,
        {"endpoint": "http://dce.example", "auth": {"tenant_id": "t"}, "max_request_bytes": 2_000_000},
        "sinks[0]",
        problems,
    )
    text = "\n".join(problems)
    assert "sinks[0].endpoint: expected an https URL" in text
    assert "sinks[0].dcr_immutable_id: required" in text
    assert "sinks[0].auth.client_id: required" in text
    assert "sinks[0].max_request_bytes: expected at most 1048576" in text


def test_settings_defaults_and_cloud_scope():
    problems: list[str] = []
    settings = build(
        SentinelSettings,
        {
            "endpoint": "https://dce.usgovvirginia-1.ingest.monitor.azure.us",
            "dcr_immutable_id": DCR,
            "auth": {"tenant_id": "t", "client_id": "c", "client_secret": "s", "cloud": "gcc-high"},
        },
        "sinks[0]",
        problems,
    )
    assert problems == []
    assert settings.stream == "Custom-PurviewDLP_CL" and settings.api_version == "2023-01-01"
    import logging

    from forwarder.sink import SinkContext

    sink = SentinelSink("s", settings, SinkContext("s", logging.getLogger("t")))
    assert sink.scope == "https://monitor.azure.us/.default"
    assert (
        sink.url
        == f"https://dce.usgovvirginia-1.ingest.monitor.azure.us/dataCollectionRules/{DCR}/streams/Custom-PurviewDLP_CL"
    )


def test_emulator_command_serves_in_its_own_process(tmp_path):
    issuer = Issuer()
    key = tmp_path / "pub.pem"
    key.write_bytes(issuer.public_pem)
    out = tmp_path / "rows.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulators.logs_ingestion",
            "--public-key",
            str(key),
            "--state-dir",
            "tls",  # relative to the emulator's working directory; it prints the CA's absolute path
            "--dcr",
            DCR,
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        info = {}
        deadline = time.monotonic() + 30
        while "ca_bundle" not in info and time.monotonic() < deadline:
            k, _, v = proc.stdout.readline().strip().partition(" = ")
            info[k] = v
        assert info["ca_bundle"] == str(tmp_path / "tls" / "ca.pem")
        ctx = ssl.create_default_context(cafile=info["ca_bundle"])
        r = httpx.post(
            f"{info['endpoint']}/dataCollectionRules/{DCR}/streams/{info['stream']}?api-version=2023-01-01",
            content=b'[{"EventId": "cli"}]',
            headers={"Authorization": f"Bearer {issuer.token()}", "Content-Type": "application/json"},
            verify=ctx,
        )
        assert r.status_code == 204
        assert out.read_text() == '{"EventId":"cli"}\n'
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_every_cloud_has_a_monitor_scope_the_emulators_know():
    import logging

    from emulators.tenant.tokens import RESOURCES
    from forwarder.auth import AuthSettings
    from forwarder.clouds import CLOUDS
    from forwarder.settings import Secret
    from forwarder.sink import SinkContext

    for name, cloud in CLOUDS.items():
        auth = AuthSettings("t", "c", client_secret=Secret("s"), cloud=name)
        settings = SentinelSettings(endpoint="https://dce.example", dcr_immutable_id=DCR, auth=auth)
        sink = SentinelSink("s", settings, SinkContext("s", logging.getLogger("t")))
        assert sink.scope == cloud.monitor_scope and sink.scope.endswith("/.default")
        assert sink.scope.removesuffix("/.default") in RESOURCES, name
    override = SentinelSettings(
        endpoint="https://dce.example", dcr_immutable_id=DCR, auth=auth, scope="https://custom/.default"
    )
    assert SentinelSink("s", override, SinkContext("s", logging.getLogger("t"))).scope == "https://custom/.default"


def test_command_flags_match_the_tenant_emulator():
    """--host/--port/--http/--state-dir as the tenant emulator spells them; --no-tls and
    --cert-dir still parse."""
    import argparse

    from emulators.logs_ingestion.plugin import configure

    parser = argparse.ArgumentParser()
    configure(parser)
    for argv in (
        ["--host", "127.0.0.2", "--port", "0", "--http", "--state-dir", "d"],
        ["--host", "127.0.0.2", "--port", "0", "--no-tls", "--cert-dir", "d"],
    ):
        args = parser.parse_args(argv)
        assert (args.bind, args.port, args.http, args.state_dir) == ("127.0.0.2", 0, True, "d")
    assert parser.parse_args([]).http is False


def test_emulator_processes_keep_large_bodies_on_the_heap():
    """keep_large_buffers_on_heap (called by both emulator commands) stops glibc from mapping
    and faulting in a fresh region for every ~1 MB body."""
    import pytest

    script = """
import resource, sys, zlib
from emulators.heap import keep_large_buffers_on_heap
ok = keep_large_buffers_on_heap() if sys.argv[1] == "on" else True
body = zlib.compress(b"x" * 1_000_000)
zlib.decompress(body)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    zlib.decompress(body)
print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {}
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True).stdout
        ok, count = out.split()
        if ok != "True":
            pytest.skip("not glibc: mallopt unavailable")
        faults[mode] = int(count)
    assert faults["on"] < 50 <= faults["off"], faults  # about 245 per call without it
