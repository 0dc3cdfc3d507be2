"""The configuration: one TOML file with ``[forwarder]``, ``[policy]``, ``[[sources]]`` and ``[[sinks]]``.

In a ``[[sources]]`` or ``[[sinks]]`` table, ``name`` and ``type`` and the host-owned options
(:mod:`forwarder.options`) are read by the host; every other key belongs to the plugin named
by ``type`` and is validated against its ``settings_class``. ``load_config`` reports every
problem at once with its key path (:class:`forwarder.errors.ConfigError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forwarder.options import SinkOptions, SourceOptions
from forwarder.settings import Secret, setting


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
