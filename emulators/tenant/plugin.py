"""CLI commands of the tenant emulator: ``dlpfwd emulator`` and ``dlpfwd demo``.

This module is the ``emulator_tenant`` entry point; it stays cheap to import (the emulator
and the demo are imported when their command runs).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from emulators.cli import add_listen_arguments
from forwarder.hookspecs import hookimpl

#: The fault knobs (``FaultConfig`` fields) settable by a ``--<knob>`` flag, with their type;
#: docs/emulator.md "Fault knobs" says what each does (``retry_after`` has no flag).
FAULT_FLAGS: tuple[tuple[str, type], ...] = (
    ("throttle_rate", float),
    ("error_rate", float),
    ("latency", float),
    ("partial_rate", float),
    ("expand_failure_rate", float),
    ("token_lifetime", float),
    ("duplicate_rate", float),
    ("malformed_rate", float),
    ("late_rate", float),
    ("late_delay", float),
    ("out_of_order_rate", float),
    ("graph_rate_limit", int),
    ("management_rate_limit", int),
)


def add_data_arguments(parser: argparse.ArgumentParser, records: int) -> None:
    data = parser.add_argument_group("generated data")
    data.add_argument(
        "--seed", type=int, default=1, metavar="N", help="data seed (same seed, same data and credentials)"
    )
    data.add_argument("--audit-records", type=int, default=records, metavar="N", help="DLP audit records to generate")
    data.add_argument(
        "--days", type=float, default=2.0, metavar="D", help="days the records are spread over (before now)"
    )
    data.add_argument("--records-per-blob", type=int, default=50, metavar="N", help="records per content blob")
    data.add_argument("--alert-every", type=int, default=10, metavar="N", help="one Graph alert per N audit records")


def _fault_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--<knob> VALUE`` flag per fault knob; their effects are documented once, in
    docs/emulator.md "Fault knobs", so ``--help`` lists only their names (it fits a screen)."""
    names = ", ".join(_fault_flag(name) for name, _ in FAULT_FLAGS)
    faults = parser.add_argument_group(
        "fault knobs",
        f"{names} (each takes a number; rates are shares in [0, 1]). "
        'Effects and defaults: docs/emulator.md, "Fault knobs".',
    )
    for name, kind in FAULT_FLAGS:
        faults.add_argument(_fault_flag(name), type=kind, default=None, help=argparse.SUPPRESS)


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, except that text is not wrapped inside a hyphenated flag name."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        words = " ".join(text.split())
        return textwrap.fill(words, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)


def configure_emulator(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _Formatter
    parser.usage = "%(prog)s [options] [--FAULT-KNOB VALUE ...]"
    add_listen_arguments(
        parser,
        port=8443,
        state_dir="./dlpfwd-emulator",
        state_help="signing key and TLS CA/certificates",
        http_help="plain HTTP instead of HTTPS (msal needs HTTPS)",
    )
    parser.add_argument("--info-file", default="", metavar="PATH", help="also write url, ca_file, credentials as JSON")
    parser.add_argument(
        "--blob-cache-mb", type=int, default=128, metavar="MB", help="memory for generated blobs, compressed (0: none)"
    )
    parser.add_argument("--live", action="store_true", help="keep generating activity after start, at the same rate")
    add_data_arguments(parser, 2000)
    add_fault_arguments(parser)


def build_emulator(args: argparse.Namespace, state_dir: str | Path) -> Any:
    from emulators.tenant import EmulatorConfig, FaultConfig, TenantEmulator

    faults = FaultConfig()
    changes = {name: getattr(args, name) for name, _ in FAULT_FLAGS if getattr(args, name, None) is not None}
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
