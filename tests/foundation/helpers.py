"""Helpers for the foundation tests: a plugin host with only the built-ins these tests need."""

from __future__ import annotations

from forwarder.plugins import PluginHost


def builtin_host(collect: bool = True) -> PluginHost:
    """A host with the file sink and the sample source, loaded as modules (no entry points).
    ``collect=False`` leaves registration to the caller (after adding more plugins)."""
    host = PluginHost()
    host.load_module("sample", "sources.sample")
    host.load_module("file", "sinks.file")
    if collect:
        host.collect()
    return host
