"""``dlpfwd demo``: the emulator, a generated configuration and one forwarder run, offline.

Starts the tenant emulator in-process on a free port (TLS, its own CA), writes
``<dir>/dlpfwd.toml`` (Management Activity DLP.All + Graph alerts/incidents into a file
sink), runs :meth:`forwarder.runtime.Forwarder.run_once`, and prints what arrived by workload,
severity and policy. If a part of the forwarder is missing, it says which one and stops.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from emulators.tenant.plugin import build_emulator

CONFIG_TEMPLATE = """\
# dlpfwd demo configuration, written by `dlpfwd demo`.
# It points at the built-in tenant emulator. To run it again by hand:
#   dlpfwd emulator --port {port} --state-dir {emulator_dir} --seed {seed} --audit-records {records} &
#   dlpfwd run --config {config}
# To use a real tenant, replace the [sources.auth] values and drop the *_url / authority /
# ca_bundle overrides.

[forwarder]
state_dir = "{state_dir}"

[policy]
sensitive_values = "mask"          # drop | mask | hash: matched values never leave unmasked

[[sources]]
name = "demo-audit"
type = "management_activity"
content_types = ["DLP.All"]
start_hours = {start_hours}
management_url = "{url}"
publisher_id = "{publisher_id}"
[sources.auth]
tenant_id = "{tenant_id}"
client_id = "{client_id}"
client_secret = "file:{secret_file}"
authority = "{url}"
[sources.http]
ca_bundle = "{ca_file}"

[[sources]]
name = "demo-alerts"
type = "graph_security"
start_days = {start_days}
graph_url = "{url}"
[sources.auth]
tenant_id = "{tenant_id}"
client_id = "{client_id}"
client_secret = "file:{secret_file}"
authority = "{url}"
[sources.http]
ca_bundle = "{ca_file}"

[[sinks]]
name = "demo-file"
type = "file"
path = "{out_dir}/dlp-events.jsonl"
fsync = false
"""


def write_config(directory: Path, emu: Any, server: Any, args: argparse.Namespace) -> Path:
    """Write the demo configuration and the secret file; return the config path."""
    secret_file = directory / "client-secret"
    secret_file.write_text(emu.client_secret + "\n", encoding="utf-8")
    secret_file.chmod(0o600)
    config = directory / "dlpfwd.toml"
    hours = args.days * 24 + 2
    config.write_text(
        CONFIG_TEMPLATE.format(
            port=server.port,
            emulator_dir=(directory / "emulator").as_posix(),
            seed=args.seed,
            records=args.audit_records,
            config=config.as_posix(),
            state_dir=(directory / "state").as_posix(),
            start_hours=min(hours, 167.0),
            start_days=round(min(hours, 167.0) / 24, 3),
            url=server.url,
            publisher_id=emu.publisher_id,
            tenant_id=emu.tenant_id,
            client_id=emu.client_id,
            secret_file=secret_file.resolve().as_posix(),
            ca_file=Path(server.ca_file).resolve().as_posix(),
            out_dir=(directory / "out").as_posix(),
        ),
        encoding="utf-8",
    )
    return config


def missing_parts() -> list[str]:
    """The forwarder parts the demo needs that cannot be imported or loaded, with the reason."""
    import importlib

    problems = []
    for module, what in (
        ("forwarder.runtime", "the runtime (forwarder.runtime)"),
        ("forwarder.config", "the configuration loader (forwarder.config)"),
        ("sources.management_activity", "the management_activity source"),
        ("sources.graph_security", "the graph_security source"),
        ("sinks.file", "the file sink"),
    ):
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - report any import failure of a missing part
            problems.append(f"{what}: {type(exc).__name__}: {exc}")
    return problems


def summarize(out_dir: Path) -> dict[str, Counter[str]]:
    """Count the events in ``out_dir/*.jsonl`` by kind, workload, severity and policy."""
    counts: dict[str, Counter[str]] = {k: Counter() for k in ("kind", "workload", "severity", "policy")}
    for path in sorted(out_dir.glob("*.jsonl")):
        with path.open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                counts["kind"][str(event.get("kind") or "?")] += 1
                counts["workload"][str(event.get("workload") or "(none)")] += 1
                counts["severity"][str(event.get("severity") or "unknown")] += 1
                policies = event.get("policies") or []
                names = {str(p["name"]) for p in policies if isinstance(p, dict) and p.get("name")}
                kind = str(event.get("kind") or "?")
                for name in names or {f"(none named: {kind})"}:
                    counts["policy"][name] += 1
    return counts


def print_summary(
    counts: dict[str, Counter[str]], result: Any, directory: Path, config: Path, days: float = 2.0
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)  # commands and paths stay on one line, to copy
    total = sum(counts["kind"].values())
    console.print(f"\n[bold]dlpfwd demo[/bold]: {total} events written (matched sensitive values masked)")
    for dimension, title in (
        ("kind", "Events by kind"),
        ("workload", "Events by workload"),
        ("severity", "Events by severity"),
        ("policy", "Events by policy"),
    ):
        table = Table(title=title, title_justify="left")
        table.add_column(dimension.capitalize())
        table.add_column("Events", justify="right")
        for key, n in counts[dimension].most_common():
            table.add_row(key, str(n))
        console.print(table)
    if result is not None:
        console.print(result.summary())
    out_files = ", ".join(str(p) for p in sorted((directory / "out").glob("*.jsonl"))) or "(none)"
    console.print(f"\nEvents:        {out_files}")
    console.print(f"Configuration: {config}")
    console.print(f"State:         {directory / 'state'}")
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days, hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    console.print(
        "Rerun with [bold]dlpfwd demo[/bold], or edit the configuration and follow the two commands at its top."
    )
    console.print(f"What was read and delivered: [bold]dlpfwd --config {config} state[/bold]")
    console.print(f"Completeness:                [bold]dlpfwd --config {config} report --since {since}[/bold]")


def run_demo(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    if not args.keep_state:
        shutil.rmtree(directory / "state", ignore_errors=True)
        for old in (directory / "out").glob("*.jsonl*"):
            old.unlink()
    (directory / "out").mkdir(exist_ok=True)
    emu = build_emulator(args, directory / "emulator")
    server = emu.serve(tls=True, port=0)
    with server:
        config_path = write_config(directory, emu, server, args)
        problems = missing_parts()
        if problems:
            print("dlpfwd demo: the emulator runs and the configuration is written, but these parts are missing:")
            for p in problems:
                print(f"  - {p}")
            print(f"Configuration: {config_path}")
            return 1
        from forwarder.cli import build_host
        from forwarder.config import load_config
        from forwarder.errors import ConfigError
        from forwarder.runtime import Forwarder

        host = build_host(None)
        try:
            config = load_config(config_path, host)
        except ConfigError as exc:
            print(f"dlpfwd demo: the generated configuration was refused:\n{exc}")
            return 2
        forwarder = Forwarder(config, host)
        try:
            result = forwarder.run_once()
        finally:
            forwarder.close()
    print_summary(summarize(directory / "out"), result, directory, config_path, args.days)
    return 0 if result.ok else 1
