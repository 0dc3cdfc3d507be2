"""The ``servicenow`` sink plugin: one ServiceNow ticket per Defender incident, kept up to date.

See ``docs/itsm.md``; the Table API emulator is :mod:`emulators.servicenow`.
"""

from __future__ import annotations

from collections.abc import Callable

from forwarder.hookspecs import hookimpl


@hookimpl
def dlpfwd_register_sinks(register: Callable[[str, type], None]) -> None:
    from sinks.servicenow.sink import ServiceNowSink

    register("servicenow", ServiceNowSink)


@hookimpl
def dlpfwd_register_commands(register: Callable[..., None]) -> None:
    from forwarder.sync.commands import register_sync

    register_sync(register)
