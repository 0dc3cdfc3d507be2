"""CLI commands of the tenant emulator: ``dlpfwd emulator`` and ``dlpfwd demo``.

This module is the ``emulator_tenant`` entry point; it stays cheap to import (the emulator
and the demo are imported when their command runs).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from forwarder.hookspecs import hookimpl

FAULT_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("throttle_rate", float, "share of API calls answered 429 (Graph: Retry-After; Management: AF429)"),
    ("error_rate", float, "share of API calls answered 500/503"),
    ("latency", float, "seconds added to every API call"),
    ("partial_rate", float, "share of Graph list responses sent as 206 with a Warning header"),
    ("expand_failure_rate", float, "share of incident lists with $expand=alerts and $filter answered 500"),
    ("token_lifetime", float, "access token lifetime in seconds (short-lived tokens)"),
    ("duplicate_rate", float, "share of blobs repeating records of the previous blob"),
    ("malformed_rate", float, "share of records replaced by a wrong-shaped record"),
    ("late_rate", float, "share of blobs listed only late_delay seconds after contentCreated"),
    ("late_delay", float, "delay of late blobs, seconds"),
    ("out_of_order_rate", float, "share of records whose CreationTime is hours older than their blob's"),
    ("graph_rate_limit", int, "Graph requests per minute per app before 429 (real: 150; 0 = off)"),
    ("management_rate_limit", int, "Management API requests per minute per PublisherIdentifier (0 = off)"),
)


def add_data_arguments(parser: argparse.ArgumentParser, records: int) -> None:
    parser.add_argument("--seed", type=int, default=1, help="data seed (same seed, same data and credentials)")
    parser.add_argument("--audit-records", type=int, default=records, help="DLP audit records to generate")
    parser.add_argument("--days", type=float, default=2.0, help="days the records are spread over (before now)")
    parser.add_argument("--records-per-blob", type=int, default=50, help="records per content blob")
    parser.add_argument("--alert-every", type=int, default=10, help="one Graph alert per N audit records")


def configure_emulator(parser: argparse.ArgumentParser) -> None:
    # dest is not "host": the CLI keeps its plugin host in args.host
    parser.add_argument(
        "--host", dest="bind", metavar="ADDRESS", default="127.0.0.1", help="address to listen on (loopback)"
    )
    parser.add_argument("--port", type=int, default=8443, help="port (0: a free one)")
    parser.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS (msal needs HTTPS)")
    parser.add_argument("--state-dir", default="./dlpfwd-emulator", help="signing key and TLS CA/certificates")
    parser.add_argument("--info-file", default="", help="also write url, ca_file and credentials as JSON here")
    parser.add_argument(
        "--blob-cache-mb", type=int, default=128, help="memory for generated blobs, kept compressed (0: none)"
    )
    parser.add_argument("--live", action="store_true", help="keep generating activity after start, at the same rate")
    add_data_arguments(parser, 2000)
    for name, kind, doc in FAULT_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=doc)


def build_emulator(args: argparse.Namespace, state_dir: str | Path) -> Any:
    from emulators.tenant import EmulatorConfig, FaultConfig, TenantEmulator

    faults = FaultConfig()
    changes = {name: getattr(args, name) for name, _, _ in FAULT_FLAGS if getattr(args, name, None) is not None}
    faults.update(**changes)
    config = EmulatorConfig(
        seed=args.seed,
        audit_records=args.audit_records,
        days=args.days,
        records_per_blob=args.records_per_blob,
        alert_every=args.alert_every,
        live=bool(getattr(args, "live", False)),
        blob_cache_mb=int(getattr(args, "blob_cache_mb", 128)),
        faults=faults,
    )
    return TenantEmulator(config, state_dir=state_dir)


def connection_info(emu: Any, server: Any) -> dict[str, str]:
    """What a client needs: URLs, CA file and the app's credentials (emulator-only secrets)."""
    return {
        "url": server.url,
        "ca_file": server.ca_file,
        "tenant_id": emu.tenant_id,
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "publisher_id": emu.publisher_id,
        "authority": server.url,
        "graph_url": server.url,
        "management_url": server.url,
    }


def run_emulator(args: argparse.Namespace) -> int:
    emu = build_emulator(args, args.state_dir)
    try:
        server = emu.serve(tls=not args.http, port=args.port, host=args.bind)
    except OSError as exc:
        print(f"emulator: cannot listen on {args.bind}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    info = connection_info(emu, server)
    if args.info_file:
        Path(args.info_file).write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
        os.chmod(args.info_file, 0o600)
    print(f"dlpfwd tenant emulator listening on {server.url}")
    if server.ca_file:
        print(f"  CA file        {server.ca_file}")
    print(f"  tenant id      {emu.tenant_id}")
    print(f"  client id      {emu.client_id}")
    print(f"  client secret  {emu.client_secret}   (an emulator credential)")
    print(f"  publisher id   {emu.publisher_id}")
    print(f"  token endpoint {server.url}/{emu.tenant_id}/oauth2/v2.0/token")
    print(f"  Graph          {server.url}/v1.0/security/alerts_v2")
    print(f"  Management API {server.url}/api/v1.0/{emu.tenant_id}/activity/feed/")
    print(f"  data           seed {args.seed}, {args.audit_records} audit records over {args.days} days")
    sys.stdout.flush()
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    server.start()
    try:
        stop.wait()
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    print("emulator stopped")
    return 0


def configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default="./dlpfwd-demo", help="where the config, output and state go")
    parser.add_argument("--keep-state", action="store_true", help="keep the previous run's state and output")
    add_data_arguments(parser, 300)


def run_demo(args: argparse.Namespace) -> int:
    from emulators.tenant.demo import run_demo as demo

    return demo(args)


@hookimpl
def dlpfwd_register_commands(register: Callable[..., None]) -> None:
    register(
        "emulator",
        "serve the built-in Microsoft tenant emulator (Entra ID, Graph security, Management Activity API)",
        configure_emulator,
        run_emulator,
    )
    register(
        "demo",
        "run the forwarder once against the built-in emulator into ./dlpfwd-demo (no network needed)",
        configure_demo,
        run_demo,
    )
