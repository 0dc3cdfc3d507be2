"""The ``splunk_hec`` sink plugin (entry point ``splunk_hec = sinks.splunk_hec``).

See :mod:`sinks.splunk_hec.sink` for the delivery guarantee and ``docs/splunk.md`` for the
settings, the status-code table and the add-on.
"""

from __future__ import annotations

from collections.abc import Callable

from forwarder.hookspecs import hookimpl


@hookimpl
def dlpfwd_register_sinks(register: Callable[[str, type], None]) -> None:
    from sinks.splunk_hec.sink import HecSink

    register("splunk_hec", HecSink)
