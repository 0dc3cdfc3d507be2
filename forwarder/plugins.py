"""The plugin host: finds plugins through the ``dlpfwd`` entry-point group and collects what
they register.

* Built-in sources, sinks and commands are entry points of our own ``pyproject.toml``, loaded
  through the same door as third-party packages.
* ``allow`` (the ``[forwarder] plugins`` setting or ``DLPFWD_LOAD_PLUGINS``, comma separated)
  restricts which entry points load; ``DLPFWD_DISABLE_PLUGIN_AUTOLOAD=1`` loads none but the
  essential core.
* A plugin that fails to import, implements an unknown hook, raises in a registration hook or
  registers something that breaks its contract is recorded in :attr:`PluginHost.failures`
  by name; the others load normally. ``strict=True`` turns the first failure into an error.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import inspect
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, is_dataclass
from types import ModuleType
from typing import Any

import pluggy

from forwarder import hookspecs
from forwarder.errors import PluginLoadError
from forwarder.options import SinkOptions, SourceOptions
from forwarder.sink import Sink
from forwarder.source import Source

log = logging.getLogger("dlpfwd.plugins")

ENTRY_POINT_GROUP = "dlpfwd"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class PluginInfo:
    """One loaded plugin module, for ``dlpfwd plugins``."""

    name: str  # entry point name
    module: str
    version: str  # distribution version
    distribution: str
    provides: list[tuple[str, str]] = field(default_factory=list)  # (kind, type name)


@dataclass
class PluginFailure:
    """A plugin that did not load, and why."""

    name: str
    module: str
    error: str


@dataclass
class Command:
    """A CLI sub-command registered through ``dlpfwd_register_commands``."""

    name: str
    help: str
    configure: Callable[[Any], None]
    run: Callable[[Any], int]
    plugin: str


class PluginHost:
    """Loads plugins and holds their registrations (sources, sinks, normalizers, commands)."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.failures: list[PluginFailure] = []
        self.sources: dict[str, type[Source]] = {}
        self.sinks: dict[str, type[Sink]] = {}
        self.normalizers: dict[str, Callable[..., Any]] = {}
        self.commands: dict[str, Command] = {}
        self._owner: dict[tuple[str, str], str] = {}
        self._collected: set[tuple[str, str]] = set()  # (hook, plugin) already called by collect()

    # ------------------------------------------------------------------ loading

    def load(self, allow: Iterable[str] | None = None, strict: bool = False) -> PluginHost:
        """Load entry points (restricted to ``allow`` when given), then collect registrations."""
        allowed = set(allow) if allow is not None else _env_allow_list()
        autoload = os.environ.get("DLPFWD_DISABLE_PLUGIN_AUTOLOAD", "") not in ("1", "true", "yes")
        if autoload:
            for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
                if allowed is not None and ep.name not in allowed:
                    continue
                dist = ep.dist
                self.load_module(
                    ep.name,
                    ep.value,
                    version=dist.version if dist else "",
                    distribution=dist.name if dist else "",
                    strict=strict,
                )
        self.collect(strict=strict)
        return self

    def load_module(
        self, name: str, module_path: str, version: str = "", distribution: str = "", strict: bool = False
    ) -> ModuleType | None:
        """Import one plugin module and register it with pluggy; record a failure instead of raising."""
        if self.pm.has_plugin(name):
            return None
        try:
            module = importlib.import_module(module_path)
            self.pm.register(module, name=name)
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001 - any plugin fault is isolated and reported
            if self.pm.has_plugin(name):
                self.pm.unregister(name=name)
            self._fail(name, module_path, f"{type(exc).__name__}: {exc}", strict)
            return None
        self.plugins.append(PluginInfo(name, module_path, version, distribution))
        return module

    def register_object(self, name: str, plugin: object) -> None:
        """Register an already imported plugin object (tests, embedding). Call :meth:`collect` after."""
        self.pm.register(plugin, name=name)
        self.pm.check_pending()
        self.plugins.append(PluginInfo(name, getattr(plugin, "__name__", type(plugin).__name__), "", ""))

    def collect(self, strict: bool = False) -> None:
        """Call every registration hook, one plugin at a time, so a broken one is isolated.

        Idempotent: a plugin's hooks are called once, so plugins added after a first
        ``collect`` (``load_module``, ``register_object``) are collected by the next one."""
        self._call_each("dlpfwd_register_sources", self._register_source, strict)
        self._call_each("dlpfwd_register_sinks", self._register_sink, strict)
        self._call_each("dlpfwd_register_normalizers", self._register_normalizer, strict)
        self._call_each("dlpfwd_register_commands", self._register_command, strict)

    def call_each(self, hook_name: str, strict: bool = False, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call one hook on each plugin separately; returns (plugin, result) pairs, failures recorded."""
        results: list[tuple[str, Any]] = []
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            try:
                args = {k: v for k, v in kwargs.items() if k in impl.argnames}
                results.append((impl.plugin_name, impl.function(**args)))
            except Exception as exc:  # noqa: BLE001
                error = f"{hook_name}: {type(exc).__name__}: {exc}"
                self._fail(impl.plugin_name, _module_name(impl.plugin), error, strict)
        return results

    # ------------------------------------------------------------------ registration validators

    def _call_each(self, hook_name: str, register: Callable[..., None], strict: bool) -> None:
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin = impl.plugin_name
            if (hook_name, plugin) in self._collected:
                continue
            self._collected.add((hook_name, plugin))

            def bound(*args: Any, _plugin: str = plugin, **kw: Any) -> None:
                register(_plugin, *args, **kw)

            try:
                impl.function(register=bound)
            except Exception as exc:  # noqa: BLE001
                self._fail(plugin, _module_name(impl.plugin), f"{hook_name}: {type(exc).__name__}: {exc}", strict)

    def _claim(self, plugin: str, kind: str, name: str) -> None:
        if kind != "command" and not _NAME.match(name):  # command names (with '-') are checked on registration
            raise PluginLoadError(f"{kind} name {name!r} must match {_NAME.pattern}")
        owner = self._owner.get((kind, name))
        if owner is not None:
            raise PluginLoadError(f"{kind} {name!r} is already registered by plugin {owner!r}")
        self._owner[(kind, name)] = plugin
        for info in self.plugins:
            if info.name == plugin:
                info.provides.append((kind, name))

    def _register_source(self, plugin: str, name: str, cls: type) -> None:
        if not (inspect.isclass(cls) and issubclass(cls, Source)):
            raise PluginLoadError(f"source {name!r}: {cls!r} is not a forwarder.source.Source subclass")
        if inspect.isabstract(cls):
            raise PluginLoadError(f"source {name!r}: {cls.__name__} leaves abstract methods unimplemented")
        _check_settings(f"source {name!r}", cls, SourceOptions)
        self._claim(plugin, "source", name)
        self.sources[name] = cls

    def _register_sink(self, plugin: str, name: str, cls: type) -> None:
        if not (inspect.isclass(cls) and issubclass(cls, Sink)):
            raise PluginLoadError(f"sink {name!r}: {cls!r} is not a forwarder.sink.Sink subclass")
        if inspect.isabstract(cls):
            raise PluginLoadError(f"sink {name!r}: {cls.__name__} leaves abstract methods unimplemented")
        _check_settings(f"sink {name!r}", cls, SinkOptions)
        if not isinstance(cls.max_batch_events, int) or cls.max_batch_events < 1:
            raise PluginLoadError(f"sink {name!r}: max_batch_events must be a positive integer")
        if not isinstance(cls.max_batch_bytes, int) or cls.max_batch_bytes < 0:
            raise PluginLoadError(f"sink {name!r}: max_batch_bytes must be 0 (no cap) or a positive integer")
        self._claim(plugin, "sink", name)
        self.sinks[name] = cls

    def _register_normalizer(self, plugin: str, kind: str, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise PluginLoadError(f"normalizer {kind!r}: {fn!r} is not callable")
        self._claim(plugin, "normalizer", kind)
        self.normalizers[kind] = fn

    def _register_command(
        self, plugin: str, name: str, help: str, configure: Callable[[Any], None], run: Callable[[Any], int]
    ) -> None:
        if not re.match(r"^[a-z][a-z0-9-]*$", name):
            raise PluginLoadError(f"command name {name!r} must be lower-case words joined by '-'")
        self._claim(plugin, "command", name)
        self.commands[name] = Command(name, help, configure, run, plugin)

    def _fail(self, name: str, module: str, error: str, strict: bool) -> None:
        log.error("plugin %s (%s) failed to load: %s", name, module, error)
        self.failures.append(PluginFailure(name, module, error))
        if strict:
            raise PluginLoadError(f"plugin {name} ({module}): {error}")


def _check_settings(what: str, cls: type, host_owned: type | None = None) -> None:
    settings = getattr(cls, "settings_class", None)
    if settings is None or not is_dataclass(settings):
        raise PluginLoadError(f"{what}: settings_class must be a dataclass (see forwarder.settings)")
    if host_owned is not None:
        reserved = {f.name for f in fields(host_owned)} | {"name", "type"}
        clash = sorted(reserved & {f.name for f in fields(settings)})
        if clash:
            raise PluginLoadError(f"{what}: settings {', '.join(clash)} clash with keys the host owns")


def _module_name(plugin: object) -> str:
    return getattr(plugin, "__name__", type(plugin).__name__)


def _env_allow_list() -> set[str] | None:
    raw = os.environ.get("DLPFWD_LOAD_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}
