"""Fixtures shared by every test area.

Tests never inherit the operator's dlpfwd environment: the configuration path, plugin
allow-list and autoload switch are cleared for each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from forwarder.schema import DlpEvent
from forwarder.testing.events import sample_events as _sample_events

_ENV = ("DLPFWD_CONFIG", "DLPFWD_LOAD_PLUGINS", "DLPFWD_DISABLE_PLUGIN_AUTOLOAD", "DLPFWD_LOG_LEVEL")


@pytest.fixture(autouse=True)
def _clean_dlpfwd_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def dlp_events() -> list[DlpEvent]:
    """Canonical events of every kind, hostile strings included (fresh objects per test)."""
    return _sample_events()
