"""The ``dlpfwd`` command line.

Sub-commands come from plugins through ``dlpfwd_register_commands``: the core ones from the
modules in :data:`ESSENTIAL` (always loaded, whatever the allow-list says), others (emulators,
``demo``) from entry points of the ``dlpfwd`` group.

Exit codes (also in ``docs/cli.md``):

==  =====================================================================
0   success
1   something could not be delivered, or a health check failed
2   usage or configuration error
3   a plugin failed to load and ``--strict-plugins`` was given
==  =====================================================================
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from forwarder import __version__

#: Core command modules; always loaded, even with an allow-list or autoload disabled.
ESSENTIAL: tuple[str, ...] = (
    "forwarder.cli.core_commands",
    "forwarder.cli.state_commands",
    "forwarder.correlation.commands",
    "forwarder.serve.command",
)

EXIT_OK = 0
EXIT_UNDELIVERED = 1
EXIT_USAGE = 2
EXIT_PLUGIN = 3
EXIT_INTERRUPTED = 130

DEFAULT_CONFIG = "dlpfwd.toml"


def config_path(explicit: str | None) -> str:
    """``--config``, else ``$DLPFWD_CONFIG``, else ``./dlpfwd.toml``."""
    return explicit or os.environ.get("DLPFWD_CONFIG") or DEFAULT_CONFIG


def peek_allow_list(path: str) -> list[str] | None:
    """The ``[forwarder] plugins`` allow-list of the configuration at ``path``, read before plugins
    load (the full validation needs the plugins). ``None`` when absent or unreadable; the
    loader reports problems properly later."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    forwarder = data.get("forwarder")
    plugins = forwarder.get("plugins") if isinstance(forwarder, dict) else None
    if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
        return list(plugins)
    return None


# Keys whose literal string values are credentials (not paths to them: "private_key" is a file).
_SECRET_KEY = ("secret", "token", "password", "passphrase", "credential", "signature", "hash_key", "api_key")
_NOT_SECRET_KEY = ("_file", "_path", "_url", "_uri", "token_url", "_cache")


def peek_secrets(path: str) -> int:
    """Register for redaction every secret the configuration at ``path`` refers to, before
    anything is printed: values behind ``${ENV}`` / ``file:`` references anywhere, and literal
    strings under secret-looking keys. Works on invalid configurations too; returns the count."""
    from forwarder.logs import register_secret
    from forwarder.settings import resolve_secret

    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return 0
    count = 0

    def walk(value: Any, key: str) -> None:
        nonlocal count
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k).lower())
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and value:
            if value.startswith(("${", "file:")):
                secret, _ = resolve_secret(value)
                if secret is not None and secret.reveal():
                    register_secret(secret)
                    count += 1
            elif any(word in key for word in _SECRET_KEY) and not key.endswith(_NOT_SECRET_KEY):
                register_secret(value)
                count += 1

    walk(data, "")
    return count


def build_host(allow: list[str] | None, strict: bool = False) -> Any:
    """Load the essential command modules, then the entry points (restricted by ``allow``)."""
    import logging

    from forwarder.plugins import PluginHost

    # The CLI reports load failures itself, one line each (see ``main``); no duplicate log lines.
    plugin_log = logging.getLogger("dlpfwd.plugins")
    previous = plugin_log.disabled
    plugin_log.disabled = True
    try:
        return _load_host(PluginHost(), allow, strict)
    finally:
        plugin_log.disabled = previous


def _load_host(host: Any, allow: list[str] | None, strict: bool) -> Any:
    for module in ESSENTIAL:
        host.load_module(module.rsplit(".", 1)[-1], module, version=__version__, distribution="dlpfwd", strict=strict)
    return host.load(allow=allow, strict=strict)


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="default $DLPFWD_CONFIG, else ./dlpfwd.toml",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        metavar="LEVEL",
        default=default,
        help="debug, info, warning or error",
    )
    parser.add_argument(
        "--strict-plugins",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="exit 3 if a plugin fails to load",
    )


_HELP_POSITION = 32
_HELP_WIDTH = 50  # what fits beside the command names at 80 columns


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, max_help_position=_HELP_POSITION)


def _one_line(text: str) -> str:
    """A command's help shortened to one line of an 80-column overview (``--help`` fits a screen);
    the command's own ``--help`` shows it in full."""
    text = text.split(" (")[0].split("; ")[0].strip()
    if len(text) <= _HELP_WIDTH:
        return text
    return text[: _HELP_WIDTH - 3].rsplit(" ", 1)[0] + "..."


#: Namespace attributes the CLI sets itself; a command's options must not store into them.
RESERVED_DESTS = frozenset({"host", "_command"})


#: Shown under every command's ``--help`` (a command may set its own epilog in ``configure``).
EXIT_CODES_HELP = "Exit codes: 0 ok, 1 undelivered or unhealthy, 2 usage/config error, 3 plugin load failure (strict)."


def build_parser(host: Any) -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per registered command."""
    parser = argparse.ArgumentParser(
        prog="dlpfwd",
        formatter_class=_formatter,
        description="Forward Microsoft Purview DLP events to SIEMs and files, losing nothing.",
        epilog=f"{EXIT_CODES_HELP} Docs: README.md, docs/configuration.md, docs/cli.md.",
    )
    _global_options(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"dlpfwd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    shared = argparse.ArgumentParser(add_help=False)
    _global_options(shared, suppress=True)
    for name in sorted(host.commands):
        command = host.commands[name]
        child = sub.add_parser(
            name, help=_one_line(command.help), description=command.help, epilog=EXIT_CODES_HELP, parents=[shared]
        )
        try:
            command.configure(child)
        except Exception as exc:  # noqa: BLE001 - a broken plugin command must not break the CLI
            host._fail(command.plugin, command.plugin, f"configure {name}: {type(exc).__name__}: {exc}", False)
            continue
        if any(action.dest in RESERVED_DESTS for action in child._actions):
            # The CLI puts the plugin host in args.host: an option stored there would be clobbered.
            host._fail(command.plugin, command.plugin, f"configure {name}: option dest 'host' is reserved", False)
            continue
        child.set_defaults(_command=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dlpfwd`` console script; returns the exit code."""
    from forwarder.logs import redact, setup_logging

    args_list = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    _global_options(pre, suppress=False)
    known, _ = pre.parse_known_args(args_list)
    setup_logging(known.log_level or os.environ.get("DLPFWD_LOG_LEVEL") or "warning")
    path = config_path(known.config)
    peek_secrets(path)
    host = build_host(peek_allow_list(path))
    parser = build_parser(host)
    args = parser.parse_args(args_list)
    args.config = config_path(getattr(args, "config", None))
    args.host = host
    quiet = getattr(args, "_command", None) is not None and args._command.name == "plugins"
    for failure in [] if quiet else host.failures:
        print(
            redact(f"dlpfwd: plugin {failure.name} ({failure.module}) failed to load: {failure.error}"), file=sys.stderr
        )
    if host.failures and args.strict_plugins:
        return EXIT_PLUGIN
    command = getattr(args, "_command", None)
    if command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code = int(command.run(args))
    except KeyboardInterrupt:  # a command that does not handle Ctrl-C itself did not finish
        print(f"dlpfwd {command.name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _reader_left()
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a clear one-line error
        from forwarder.errors import ConfigError

        if isinstance(exc, ConfigError):
            print(redact(f"dlpfwd: configuration {args.config} is invalid:"), file=sys.stderr)
            for problem in exc.problems:
                print(redact(f"  {problem}"), file=sys.stderr)
            return EXIT_USAGE
        print(redact(f"dlpfwd {command.name}: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return EXIT_UNDELIVERED
    try:
        sys.stdout.flush()  # a reader that left shows up here, not as a traceback at interpreter exit
    except BrokenPipeError:
        _reader_left()
    return code


def _reader_left() -> None:
    """``dlpfwd state | head``: the reader left early, which is not an error. Point stdout at
    /dev/null so that the interpreter's final flush does not raise again (Python's recipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
