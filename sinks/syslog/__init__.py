"""The ``syslog`` sink plugin: CEF, LEEF 2.0 or JSON over UDP, TCP or TLS (QRadar and others).

Registers :class:`~sinks.syslog.sink.SyslogSink` under the type name ``syslog``. The field
mappings are exported for the documentation test: :data:`CEF_MAPPING` and
:data:`LEEF_MAPPING` ({target key: DlpEvent field}).
"""

from __future__ import annotations

from collections.abc import Callable

from forwarder.hookspecs import hookimpl
from sinks.syslog.cef import CEF_MAPPING
from sinks.syslog.leef import LEEF_MAPPING

__all__ = ["CEF_MAPPING", "LEEF_MAPPING", "dlpfwd_register_sinks"]


@hookimpl
def dlpfwd_register_sinks(register: Callable[[str, type], None]) -> None:
    from sinks.syslog.sink import SyslogSink

    register("syslog", SyslogSink)
