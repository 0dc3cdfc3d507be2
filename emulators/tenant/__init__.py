"""The built-in Microsoft tenant emulator (Entra ID token endpoint, Graph security API, audit
log queries, Office 365 Management Activity API) with a seeded DLP data generator and fault
knobs. See ``docs/emulator.md``.

``from emulators.tenant import TenantEmulator, EmulatorConfig, FaultConfig``; names are
imported lazily so that ``emulators.tenant.tokens`` stays cheap for other emulators.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulators.tenant.config import Clock, EmulatorConfig, FaultConfig
    from emulators.tenant.emulator import TenantEmulator

__all__ = ["Clock", "EmulatorConfig", "FaultConfig", "TenantEmulator"]


def __getattr__(name: str) -> Any:
    if name in ("Clock", "EmulatorConfig", "FaultConfig"):
        from emulators.tenant import config

        return getattr(config, name)
    if name == "TenantEmulator":
        from emulators.tenant.emulator import TenantEmulator

        return TenantEmulator
    raise AttributeError(name)
