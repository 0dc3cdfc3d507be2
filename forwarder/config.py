"""The configuration: one TOML file with ``[forwarder]``, ``[policy]``, ``[[sources]]`` and ``[[sinks]]``.

In a ``[[sources]]`` or ``[[sinks]]`` table, ``name`` and ``type`` and the host-owned options
(:mod:`forwarder.options`) are read by the host; every other key belongs to the plugin named
by ``type`` and is validated against its ``settings_class``. ``load_config`` reports every
problem at once with its key path (:class:`forwarder.errors.ConfigError`).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forwarder.errors import ConfigError
from forwarder.options import SinkOptions, SourceOptions
from forwarder.schema import KINDS
from forwarder.settings import Secret, build, setting


@dataclass
class ForwarderSettings:
    """``[forwarder]``: process-wide settings."""

    state_dir: str = setting("./dlpfwd-state", doc="directory of the state store (cursors, spools, dead letters)")
    plugins: list[str] | None = setting(None, doc="allow-list of plugin entry points to load (default: all)")
    log_level: str = setting("info", doc="log level", choices=("debug", "info", "warning", "error"))
    metrics_port: int = setting(0, doc="port of the Prometheus endpoint on 127.0.0.1 (0 = off)", minimum=0)
    dedup_window: float = setting(
        7 * 86400.0, doc="seconds an idempotency key is remembered for deduplication", minimum=0
    )
    shutdown_deadline: float = setting(30.0, doc="seconds a graceful shutdown may take", minimum=0)


@dataclass
class PolicySettings:
    """``[policy]``: what happens to matched sensitive values before any sink sees an event."""

    sensitive_values: str = setting(
        "drop", doc="drop, mask or hash (HMAC-SHA256) matched sensitive values", choices=("drop", "mask", "hash")
    )
    hash_key: Secret | None = setting(None, doc="HMAC key for sensitive_values = 'hash' (${ENV} or file:)")


@dataclass
class SourceConfig:
    """One ``[[sources]]`` entry: instance name, plugin type, the plugin's settings, host options."""

    name: str
    type: str
    settings: Any
    options: SourceOptions = field(default_factory=SourceOptions)


@dataclass
class SinkConfig:
    """One ``[[sinks]]`` entry: instance name, plugin type, the plugin's settings, host options."""

    name: str
    type: str
    settings: Any
    options: SinkOptions = field(default_factory=SinkOptions)


@dataclass
class Config:
    """A validated configuration."""

    forwarder: ForwarderSettings = field(default_factory=ForwarderSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    sources: list[SourceConfig] = field(default_factory=list)
    sinks: list[SinkConfig] = field(default_factory=list)
    path: str = ""
    #: ``[correlation]`` (a ``forwarder.correlation.settings.CorrelationSettings``) when that
    #: component is installed; see :data:`CORE_SECTIONS`.
    correlation: Any = None
    #: ``[serve]`` (a ``forwarder.serve.settings.ServeSettings``): the ``dlpfwd serve`` endpoint.
    serve: Any = None

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)

    def sink(self, name: str) -> SinkConfig:
        for s in self.sinks:
            if s.name == name:
                return s
        raise KeyError(name)


# --------------------------------------------------------------------------- loading

_INSTANCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOP_LEVEL = ("forwarder", "policy", "sources", "sinks")

#: Further top-level tables owned by core components: name -> "module:SettingsClass". Each is
#: validated like ``[forwarder]`` and stored as the ``Config`` attribute of the same name
#: (``None`` when the component is not installed, in which case the table is an error).
CORE_SECTIONS: dict[str, str] = {
    "correlation": "forwarder.correlation.settings:CorrelationSettings",
    "serve": "forwarder.serve.settings:ServeSettings",
}


def _core_sections() -> dict[str, type]:
    found: dict[str, type] = {}
    for name, ref in CORE_SECTIONS.items():
        module_name, _, attr = ref.partition(":")
        try:
            found[name] = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            continue
    return found


_IDENTITY = ("name", "type")


def _host_keys(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def load_config(source: str | os.PathLike[str], host: Any) -> Config:
    """Read, parse and validate a configuration; raise :class:`ConfigError` listing every problem.

    ``source`` is a path (``str`` or ``PathLike``), or the TOML text itself when it is a ``str``
    that contains a newline. ``host`` is a loaded :class:`forwarder.plugins.PluginHost`: its
    registered source and sink types validate each instance's plugin settings. Every
    :class:`~forwarder.settings.Secret` of the result is registered for log redaction.
    """
    if isinstance(source, str) and "\n" in source:
        return parse_config(source, host, path="")
    path = os.fspath(source)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: configuration file not found (use --config or $DLPFWD_CONFIG)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"{path}: cannot read configuration: {reason}"]) from None
    return parse_config(text, host, path=path)


def parse_config(text: str, host: Any, path: str = "") -> Config:
    """Validate TOML ``text``; see :func:`load_config`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path or 'configuration'}: not valid TOML: {exc}"]) from None
    problems: list[str] = []
    config = Config(path=path)
    sections = _core_sections()
    known = _TOP_LEVEL + tuple(sections)
    for key in data:
        if key not in known:
            problems.append(f"{key}: unknown section (expected one of {', '.join(known)})")
    for name, cls in sections.items():
        built = build(cls, data.get(name, {}), name, problems)
        if built is not None:
            setattr(config, name, built)
    fwd = build(ForwarderSettings, data.get("forwarder", {}), "forwarder", problems)
    if fwd is not None:
        config.forwarder = fwd
    policy_data = data.get("policy", {})
    policy = build(PolicySettings, policy_data, "policy", problems)
    if policy is not None:
        config.policy = policy
        given = isinstance(policy_data, dict) and "hash_key" in policy_data  # a bad reference is reported already
        if policy.sensitive_values == "hash" and not policy.hash_key and not given:
            problems.append("policy.hash_key: expected a secret (${ENV} or file:) when sensitive_values = 'hash'")
    config.sources = _instances(data.get("sources", []), "sources", host.sources, SourceOptions, problems, host)
    config.sinks = _instances(data.get("sinks", []), "sinks", host.sinks, SinkOptions, problems, host)
    _cross_checks(config, problems)
    if problems:
        raise ConfigError(problems)
    from forwarder.logs import register_secrets_in

    register_secrets_in(config)
    return config


def _instances(
    tables: Any, section: str, registry: dict[str, Any], options_class: type, problems: list[str], host: Any
) -> list[Any]:
    kind = section[:-1]  # "source" / "sink"
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(f"{section}: expected an array of tables ([[{section}]])")
        return []
    host_keys = _host_keys(options_class)
    result: list[Any] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(tables):
        at = f"{section}[{i}]"
        name = table.get("name")
        if not isinstance(name, str) or not _INSTANCE_NAME.match(name):
            problems.append(f"{at}.name: expected a name of letters, digits, '_', '.', '-' (at most 64), got {name!r}")
        elif name in seen:
            problems.append(f"{at}.name: {name!r} is already used by {section}[{seen[name]}]")
        else:
            seen[name] = i
        type_name = table.get("type")
        cls = registry.get(type_name) if isinstance(type_name, str) else None
        if cls is None:
            problems.append(f"{at}.type: {_unknown_type(kind, type_name, registry, host)}")
        options_data = {k: v for k, v in table.items() if k in host_keys}
        options = build(options_class, options_data, at, problems)
        plugin_data = {k: v for k, v in table.items() if k not in host_keys and k not in _IDENTITY}
        settings = build(cls.settings_class, plugin_data, at, problems) if cls is not None else None
        instance_class = SourceConfig if section == "sources" else SinkConfig
        result.append(
            instance_class(
                name=name if isinstance(name, str) else "",
                type=type_name if isinstance(type_name, str) else "",
                settings=settings,
                options=options if options is not None else options_class(),
            )
        )
    return result


def _unknown_type(kind: str, type_name: Any, registry: dict[str, type], host: Any) -> str:
    installed = ", ".join(sorted(registry)) or "none"
    if not isinstance(type_name, str) or not type_name:
        return f"expected the {kind} plugin type (installed: {installed})"
    for failure in getattr(host, "failures", []):
        if failure.name == type_name:
            return f"{kind} type {type_name!r} is installed but failed to load ({failure.error})"
    return f"expected an installed {kind} type ({installed}), got {type_name!r}"


def _cross_checks(config: Config, problems: list[str]) -> None:
    source_names = {s.name for s in config.sources}
    for i, sink in enumerate(config.sinks):
        flt = sink.options.filter
        for j, kind in enumerate(flt.kinds):
            if kind not in KINDS:
                problems.append(f"sinks[{i}].filter.kinds[{j}]: expected one of {', '.join(KINDS)}, got {kind!r}")
        for j, name in enumerate(flt.sources):
            if name not in source_names:
                problems.append(f"sinks[{i}].filter.sources[{j}]: expected a configured source name, got {name!r}")
        if sink.options.retry.maximum < sink.options.retry.initial:
            problems.append(f"sinks[{i}].retry.maximum: expected at least retry.initial ({sink.options.retry.initial})")


def literal_secrets(config: Config) -> list[str]:
    """Key paths of secrets written literally in the file (``dlpfwd check`` warns about them)."""
    found: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Secret):
            if not value.reference:
                found.append(path)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name), f"{path}.{f.name}" if path else f.name)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}")
        elif isinstance(value, list):
            for j, v in enumerate(value):
                walk(v, f"{path}[{j}]")

    walk(config.policy, "policy")
    if config.serve is not None:
        walk(config.serve, "serve")
    for i, source in enumerate(config.sources):
        walk(source.settings, f"sources[{i}]")
    for i, sink in enumerate(config.sinks):
        walk(sink.settings, f"sinks[{i}]")
    return found
