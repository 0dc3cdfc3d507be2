"""Core commands: ``run``, ``backfill``, ``check``, ``plugins``, ``version``.

Registered through ``dlpfwd_register_commands`` like any plugin command; this module is in
:data:`forwarder.cli.ESSENTIAL`, so it loads whatever the allow-list says. The runtime
(:mod:`forwarder.runtime`) is imported inside the commands that need it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import orjson

from forwarder import __version__
from forwarder.hookspecs import hookimpl
from forwarder.logs import redact, setup_logging

EXIT_OK, EXIT_UNDELIVERED, EXIT_USAGE, EXIT_PLUGIN = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C


def _out(text: str = "") -> None:
    print(redact(text))


def _err(text: str) -> None:
    print(redact(text), file=sys.stderr)


def _load(args: argparse.Namespace) -> Any:
    """Load and validate the configuration (ConfigError propagates to ``main``: exit 2)."""
    from forwarder.config import load_config

    config = load_config(args.config, args.host)
    if not getattr(args, "log_level", None) and not os.environ.get("DLPFWD_LOG_LEVEL"):
        setup_logging(config.forwarder.log_level)
    return config


def _forwarder(config: Any, host: Any) -> Any:
    from forwarder.runtime import Forwarder  # owned by the delivery engineer; imported lazily

    return Forwarder(config, host)


# --------------------------------------------------------------------------- version


def _version(args: argparse.Namespace) -> int:
    from forwarder.schema import SCHEMA_VERSION

    _out(f"dlpfwd {__version__} (event schema {SCHEMA_VERSION}, Python {sys.version.split()[0]})")
    return EXIT_OK


# --------------------------------------------------------------------------- plugins


def _plugins_configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", action="store_true", help="also list each source and sink type's settings")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def plugin_rows(host: Any) -> list[dict[str, str]]:
    """One row per registered thing: kind, name, version, module, plugin (and failures)."""
    rows: list[dict[str, str]] = []
    for info in host.plugins:
        provides = info.provides or [("plugin", info.name)]
        for kind, name in provides:
            rows.append(
                {"kind": kind, "name": name, "version": info.version, "module": info.module, "plugin": info.name}
            )
    for failure in host.failures:
        rows.append(
            {"kind": "FAILED", "name": failure.name, "version": "", "module": failure.module, "error": failure.error}
        )
    return rows


def _plugins(args: argparse.Namespace) -> int:
    from forwarder.settings import describe

    host = args.host
    rows = plugin_rows(host)
    if args.json:
        _out(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    widths = {k: max([len(k)] + [len(r.get(k, "")) for r in rows]) for k in ("kind", "name", "version", "module")}
    _out("  ".join(k.upper().ljust(widths[k]) for k in widths).rstrip())
    for row in rows:
        line = "  ".join(row.get(k, "").ljust(widths[k]) for k in widths)
        if row["kind"] == "FAILED":
            line += "  " + row.get("error", "")
        _out(line.rstrip())
    if args.settings:
        for kind, registry in (("source", host.sources), ("sink", host.sinks)):
            for name in sorted(registry):
                _out(f"\n[{kind} {name}]")
                for key, type_name, default, doc in describe(registry[name].settings_class):
                    _out(f"  {key} ({type_name}, default {default}): {doc}")
    return EXIT_OK


# --------------------------------------------------------------------------- check


def _check_configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--probe", action="store_true", help="also connect to every source and sink and run its health check"
    )
    parser.add_argument("--show", action="store_true", help="print the effective configuration (secrets as ***)")
    parser.add_argument(
        "--permissions",
        action="store_true",
        help="get each source app's tokens and name every application permission an enabled feature needs "
        "that the token's roles lack (also done by --probe)",
    )


def _check(args: argparse.Namespace) -> int:
    from forwarder.config import literal_secrets

    config = _load(args)
    from forwarder.errors import ConfigError
    from forwarder.sync.checks import startup_problems  # [serve] and [sinks.sync] start-up checks

    found = startup_problems(config)
    if found:
        raise ConfigError(found)
    _out(f"configuration {args.config}: valid")
    _out(f"  sources: {', '.join(f'{s.name} ({s.type})' for s in config.sources) or '(none)'}")
    _out(f"  sinks:   {', '.join(f'{s.name} ({s.type})' for s in config.sinks) or '(none)'}")
    if args.show:
        _out(orjson.dumps(effective_config(config), option=orjson.OPT_INDENT_2, default=str).decode())
    if not config.sources:
        _err("warning: no [[sources]] configured: nothing will be read")
    if not config.sinks:
        _err("warning: no [[sinks]] configured: events would be read but delivered nowhere")
    allowed = config.forwarder.plugins
    if allowed is not None:
        known = {p.name for p in args.host.plugins} | {f.name for f in args.host.failures}
        for i, name in enumerate(allowed):
            if name not in known:
                _err(f"warning: forwarder.plugins[{i}]: {name!r} is not an installed plugin (see dlpfwd plugins)")
    for key_path in literal_secrets(config):
        _err(f'warning: {key_path} is a literal secret; prefer "${{ENV_VAR}}" or "file:/path"')
    granted = True
    if args.permissions or args.probe:
        from forwarder.correlation.permissions import print_missing

        granted = print_missing(config)
    if not args.probe:
        return EXIT_OK if granted else EXIT_UNDELIVERED
    return EXIT_OK if _probe(config, args.host) and granted else EXIT_UNDELIVERED


def effective_config(config: Any) -> dict[str, Any]:
    """The validated configuration with defaults filled in and every secret as ``***``."""
    from forwarder.settings import redacted

    return {
        "forwarder": redacted(config.forwarder),
        "policy": redacted(config.policy),
        "sources": [
            {"name": s.name, "type": s.type, **redacted(s.options), **(redacted(s.settings) or {})}
            for s in config.sources
        ],
        "sinks": [
            {"name": s.name, "type": s.type, **redacted(s.options), **(redacted(s.settings) or {})}
            for s in config.sinks
        ],
    }


def _probe(config: Any, host: Any) -> bool:
    """Connect to each configured source and sink, run ``health()``, print every check."""
    from forwarder.sink import SinkContext
    from forwarder.source import SourceContext

    ok = True
    targets: list[tuple[str, Callable[[], Any]]] = []
    for sc in config.sources:
        targets.append((f"source {sc.name}", _factory(host.sources[sc.type], sc, SourceContext)))
    for kc in config.sinks:
        targets.append((f"sink {kc.name}", _factory(host.sinks[kc.type], kc, SinkContext)))
    for label, factory in targets:
        plugin = None
        try:
            plugin = factory()
            plugin.connect()
            health = plugin.health()
            for check in health.checks:
                mark = "ok  " if check.ok else "FAIL"
                # Redacted apart: "token" + ": " + "roles: ..." read as one line looks like a credential.
                detail = ": " + redact(check.detail) if check.detail else ""
                print(redact(f"{mark} {label}: {check.name}") + detail)
            ok = ok and health.ok
        except Exception as exc:  # noqa: BLE001 - report and go on with the next target
            _out(f"FAIL {label}: {type(exc).__name__}: {exc}")
            ok = False
        finally:
            if plugin is not None:
                try:
                    plugin.close()
                except Exception as exc:  # noqa: BLE001
                    _out(f"FAIL {label}: close: {type(exc).__name__}: {exc}")
    return ok


def _factory(cls: type, instance: Any, context_class: Callable[..., Any]) -> Callable[[], Any]:
    def make() -> Any:
        logger = logging.getLogger(f"dlpfwd.{instance.name}")
        return cls(instance.name, instance.settings, context_class(instance.name, logger))

    return make


# --------------------------------------------------------------------------- run


def _run_configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--once", action="store_true", help="poll every source once, deliver, exit (1 if anything is undelivered)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT ([forwarder] metrics_port)",
    )


def _result_ok(result: Any) -> bool:
    if isinstance(result, bool):
        return result
    if isinstance(result, int):
        return result == 0
    return bool(getattr(result, "ok", False))


def _print_result(result: Any) -> None:
    summary = getattr(result, "summary", None)
    text = summary() if callable(summary) else summary
    if text:
        _err(str(text))


def _run(args: argparse.Namespace) -> int:
    config = _load(args)
    if getattr(args, "metrics_port", None) is not None:
        config.forwarder.metrics_port = args.metrics_port
    try:
        fw = _forwarder(config, args.host)
    except ImportError as exc:
        _err(f"dlpfwd run: the runtime is not available ({exc})")
        return EXIT_UNDELIVERED
    try:
        if args.once:
            result = fw.run_once()
            _print_result(result)
            return EXIT_OK if _result_ok(result) else EXIT_UNDELIVERED
        stop = threading.Event()
        _install_signal_handlers(stop, config.forwarder.shutdown_deadline)
        log = logging.getLogger("dlpfwd.run")
        log.info(
            "dlpfwd %s running: sources %s; sinks %s; state %s (SIGTERM or Ctrl-C stops it)",
            __version__,
            ", ".join(f"{s.name} ({s.type})" for s in config.sources) or "none",
            ", ".join(f"{s.name} ({s.type})" for s in config.sinks) or "none",
            config.forwarder.state_dir,
        )
        code = int(fw.run(stop))
        log.info("dlpfwd stopped (exit %d)", code)
        return code
    finally:
        fw.close()


def _install_signal_handlers(stop: threading.Event, deadline: float) -> None:
    """SIGTERM/SIGINT set ``stop``: the runtime finishes the batch in hand, persists, exits 0.
    The runtime's own installer (a second signal exits at once) is used when it exists."""
    try:
        from forwarder.runtime import install_signal_handlers
    except ImportError:

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        return
    install_signal_handlers(stop, deadline)


# --------------------------------------------------------------------------- backfill


class RelativeTime(dt.datetime):
    """A time given relative to now (``7d``), remembering how it was written (``.text``)."""

    text: str


def parse_when(text: str) -> dt.datetime:
    """An ISO 8601 time (naive = UTC), or a relative ``7d`` / ``12h`` / ``30m`` before now
    (then a :class:`RelativeTime`)."""
    text = text.strip()
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if text and text[-1] in units and text[:-1].isdigit():
        when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])
        relative = RelativeTime.fromtimestamp(when.timestamp(), dt.UTC)
        relative.text = text
        return relative
    from forwarder.schema import parse_time

    parsed = parse_time(text)
    if parsed is None:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time or 7d/12h/30m, got {text!r}")
    return parsed


def _backfill_configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, metavar="NAME", help="source instance to backfill")
    parser.add_argument("--since", required=True, type=parse_when, metavar="T", help="start (ISO 8601 or 7d)")
    parser.add_argument("--until", type=parse_when, metavar="T", help="end (ISO 8601 or 1h; default now)")
    parser.add_argument("--sink", metavar="NAME", help="deliver to this sink only (default: all)")


class Progress:
    """Prints backfill progress on one line (a TTY) or one line per update (a pipe or log).

    On a TTY the line is rewritten in place, so it must never wrap: it shows the last known
    ``done/total`` and the main counters only, cut to the terminal width. A pipe gets every
    field of every update."""

    TTY_FIELDS = ("read", "spooled", "duplicates", "quarantined", "rate", "eta")

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.updates = 0
        self.fraction: str = ""

    def __call__(self, info: dict[str, Any]) -> None:
        self.updates += 1
        done, total = info.get("done"), info.get("total")
        if isinstance(done, int | float) and isinstance(total, int | float) and total:
            self.fraction = f"{done}/{total} ({100 * done / total:.0f}%)"
            fraction = self.fraction
        else:
            fraction = ""
        if self.tty:
            parts = [self.fraction] if self.fraction else []
            parts += [f"{k}={info[k]}" for k in self.TTY_FIELDS if k in info]
            width = shutil.get_terminal_size((80, 24)).columns - 1
            line = redact("backfill: " + " ".join(parts))[:width]
            self.stream.write("\r" + line + "\x1b[K")
        else:
            parts = [fraction] if fraction else []
            parts += [f"{k}={v}" for k, v in info.items() if k not in ("done", "total")]
            self.stream.write(redact("backfill: " + " ".join(parts)) + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the progress line (idempotent)."""
        if self.tty and self.updates:
            self.stream.write("\n")
        self.updates = 0


def _backfill(args: argparse.Namespace) -> int:
    config = _load(args)
    until = args.until or dt.datetime.now(dt.UTC)
    problems = []
    if not any(s.name == args.source for s in config.sources):
        configured = ", ".join(s.name for s in config.sources) or "none"
        problems.append(f"--source: no source named {args.source!r} (configured: {configured})")
    if args.sink and not any(s.name == args.sink for s in config.sinks):
        problems.append(f"--sink: no sink named {args.sink!r}")
    if args.since >= until:
        problems.append("--since: must be before --until")
    if problems:
        for p in problems:
            _err(f"dlpfwd backfill: {p}")
        return EXIT_USAGE
    try:
        fw = _forwarder(config, args.host)
    except ImportError as exc:
        _err(f"dlpfwd backfill: the runtime is not available ({exc})")
        return EXIT_UNDELIVERED
    since, until, remembered = _resume_range(fw, args, until)
    progress = Progress()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops a backfill like Ctrl-C
    try:
        result = fw.backfill(args.source, since, until, sink=args.sink, progress=progress)
        if remembered is not None and _result_ok(result):
            fw.store.kv(_RANGES).delete(remembered)  # done: the same command line starts afresh next time
    except KeyboardInterrupt:
        progress.finish()
        _err(
            "dlpfwd backfill: interrupted; what was read so far is spooled and goes out with the next "
            "`dlpfwd run`; run the same backfill again to finish the range"
        )
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.finish()
        fw.close()
    _print_result(result)
    return EXIT_OK if _result_ok(result) else EXIT_UNDELIVERED


#: State namespace: command line of an unfinished backfill with relative times -> its resolved range.
_RANGES = "backfill:ranges"


def _resume_range(fw: Any, args: argparse.Namespace, until: dt.datetime) -> tuple[dt.datetime, dt.datetime, str | None]:
    """The range to backfill, stable across reruns of the same command line.

    The backfill's resume key is its resolved range, so a relative ``--since 7d`` (or a
    missing ``--until``: now) would make every rerun a new backfill. Such a range is resolved
    once and remembered under the command line (source, sink, ``--since``, ``--until`` as
    written) until that backfill completes; a rerun of the same command continues it.
    Returns (since, until, the remembered key or ``None`` for absolute ranges)."""
    from forwarder.schema import iso_utc, parse_time

    since = args.since
    store = getattr(fw, "store", None)
    relative = isinstance(since, RelativeTime) or args.until is None or isinstance(args.until, RelativeTime)
    if not relative or store is None:
        return since, until, None

    def written(value: dt.datetime | None, default: str) -> str:
        if value is None:
            return default
        return value.text if isinstance(value, RelativeTime) else iso_utc(value)

    key = orjson.dumps([args.source, args.sink or "", written(since, ""), written(args.until, "now")]).decode()
    ranges = store.kv(_RANGES)
    known = ranges.get(key)
    if isinstance(known, dict):
        first, last = parse_time(str(known.get("since", ""))), parse_time(str(known.get("until", "")))
        if first is not None and last is not None and first < last:
            _err(
                f"dlpfwd backfill: continuing the unfinished backfill of {iso_utc(first)}..{iso_utc(last)} "
                f"(this command's relative times, as resolved when it first ran)"
            )
            return first, last, key
    ranges.put(key, {"since": iso_utc(since), "until": iso_utc(until)})
    return since, until, key


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# --------------------------------------------------------------------------- registration


@hookimpl
def dlpfwd_register_commands(register: Callable[..., None]) -> None:
    register("run", "forward continuously (--once: poll every source once and exit)", _run_configure, _run)
    register("backfill", "re-read a historical time range of one source", _backfill_configure, _backfill)
    register("check", "validate the configuration (--probe: also test every source and sink)", _check_configure, _check)
    register("plugins", "list plugins: kind, name, version, module", _plugins_configure, _plugins)
    register("version", "print the version", lambda parser: None, _version)
