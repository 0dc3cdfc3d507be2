"""The ``sentinel`` sink plugin: Microsoft Sentinel via the Azure Monitor Logs Ingestion API.

See ``docs/sentinel.md``; the table, DCE and DCR templates are in ``packaging/sentinel/``.
"""

from __future__ import annotations

from collections.abc import Callable

from forwarder.hookspecs import hookimpl


@hookimpl
def dlpfwd_register_sinks(register: Callable[[str, type], None]) -> None:
    from sinks.sentinel.sink import SentinelSink

    register("sentinel", SentinelSink)
