"""Helpers for the foundation tests: a plugin host with only the built-ins these tests need."""

from __future__ import annotations

from forwarder.plugins import PluginHost


def builtin_host() -> PluginHost:
    """A host with the file sink and the sample source, loaded as modules (no entry points)."""
    host = PluginHost()
    host.load_module("sample", "sources.sample")
    host.load_module("file", "sinks.file")
    host.collect()
    return host
