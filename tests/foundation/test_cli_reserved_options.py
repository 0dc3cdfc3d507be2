"""A plugin command must not store an option into ``args.host``: the CLI keeps the plugin host there."""

from __future__ import annotations

import argparse
from typing import Any

from forwarder.cli import build_parser
from forwarder.hookspecs import hookimpl
from forwarder.plugins import PluginHost


class _CommandPlugin:
    def __init__(self, dest: str) -> None:
        self.dest = dest

    @hookimpl
    def dlpfwd_register_commands(self, register: Any) -> None:
        def configure(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("--host", dest=self.dest, default="127.0.0.1")

        register(f"serve-{self.dest}", "serve something", configure, lambda args: 0)


def _host_with(dest: str) -> PluginHost:
    host = PluginHost()
    host.register_object(f"cmd_{dest}", _CommandPlugin(dest))
    host.collect()
    return host


def test_option_stored_in_host_is_refused_and_reported() -> None:
    host = _host_with("host")
    parser = build_parser(host)
    args = parser.parse_args(["serve-host"])
    assert getattr(args, "_command", None) is None
    assert any("reserved" in f.error and f.name == "cmd_host" for f in host.failures)


def test_option_with_its_own_dest_is_accepted() -> None:
    host = _host_with("bind")
    args = build_parser(host).parse_args(["serve-bind", "--host", "127.0.0.2"])
    assert args._command.name == "serve-bind"
    assert args.bind == "127.0.0.2"
    assert host.failures == []
