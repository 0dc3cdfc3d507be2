"""The plugin host: hook contracts, check_pending, isolation of broken plugins, allow-list."""

from __future__ import annotations

import inspect
import types

import pytest

from forwarder import hookspecs
from forwarder.cli import ESSENTIAL, build_host
from forwarder.errors import PluginLoadError
from forwarder.hookspecs import hookimpl
from forwarder.plugins import PluginHost


def hook_names() -> list[str]:
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("dlpfwd_")]


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_documents_when_arguments_returns_and_convention(name: str) -> None:
    doc = getattr(hookspecs, name).__doc__ or ""
    for word in ("When:", "Arguments:", "Returns:", "Convention:"):
        assert word in doc, f"{name} docstring lacks {word!r}"


def module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def test_a_misspelled_hook_is_reported_by_check_pending() -> None:
    @hookimpl
    def dlpfwd_register_snks(register):  # misspelled on purpose
        pass

    host = PluginHost()
    with pytest.raises(Exception, match="unknown hook"):
        host.register_object("typo", module("typo", dlpfwd_register_snks=dlpfwd_register_snks))


def test_broken_plugins_are_isolated_and_named() -> None:
    @hookimpl
    def dlpfwd_register_sinks(register):
        raise RuntimeError("boom in registration")

    @hookimpl
    def dlpfwd_register_sources(register):
        register("Bad Name", object)

    host = PluginHost()
    host.load_module("file", "sinks.file")
    host.load_module("missing", "no_such_module_anywhere")
    host.register_object("raiser", module("raiser", dlpfwd_register_sinks=dlpfwd_register_sinks))
    host.register_object("bad", module("bad", dlpfwd_register_sources=dlpfwd_register_sources))
    host.collect()
    failed = {f.name: f.error for f in host.failures}
    assert set(failed) == {"missing", "raiser", "bad"}
    assert "boom in registration" in failed["raiser"]
    assert "file" in host.sinks  # the healthy plugin still loaded


def test_strict_mode_raises_on_the_first_failure() -> None:
    host = PluginHost()
    with pytest.raises(PluginLoadError, match="no_such_module_anywhere"):
        host.load_module("missing", "no_such_module_anywhere", strict=True)


def test_allow_list_limits_entry_points_but_never_the_essentials() -> None:
    host = build_host(["file"])
    loaded = {p.name for p in host.plugins}
    assert "file" in loaded and "sample" not in loaded
    assert {m.rsplit(".", 1)[-1] for m in ESSENTIAL} <= loaded
    assert {"run", "check", "plugins", "version", "backfill"} <= set(host.commands)
    assert build_host([]).sinks == {}


def test_collect_is_idempotent_and_picks_up_late_plugins() -> None:
    host = PluginHost()
    host.load_module("file", "sinks.file")
    host.collect()
    host.load_module("sample", "sources.sample")
    host.collect()
    host.collect()
    assert host.failures == []
    assert "file" in host.sinks and "sample" in host.sources and "sample" in host.normalizers


def test_a_sink_whose_settings_clash_with_host_owned_options_is_refused() -> None:
    from dataclasses import dataclass

    from forwarder.settings import setting
    from forwarder.sink import Outcome, Sink

    @dataclass
    class Clashing:
        batch: int = setting(5, doc="not yours")

    class ClashSink(Sink):
        settings_class = Clashing

        def write_batch(self, entries):
            return Outcome()

    @hookimpl
    def dlpfwd_register_sinks(register):
        register("clash", ClashSink)

    host = PluginHost()
    host.register_object("clash", module("clash", dlpfwd_register_sinks=dlpfwd_register_sinks))
    host.collect()
    assert "clash" not in host.sinks
    assert "settings batch clash with keys the host owns" in host.failures[0].error
