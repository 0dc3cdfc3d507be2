"""The ``webhook`` sink plugin: signed JSON POSTs of DLP events to any HTTPS URL.

See ``docs/itsm.md``; receivers verify requests with :func:`sinks.webhook.signing.verify_signature`.
"""

from __future__ import annotations

from collections.abc import Callable

from forwarder.hookspecs import hookimpl
from sinks.webhook.signing import InvalidSignature, sign, verify_signature

__all__ = ["InvalidSignature", "dlpfwd_register_sinks", "sign", "verify_signature"]


@hookimpl
def dlpfwd_register_sinks(register: Callable[[str, type], None]) -> None:
    from sinks.webhook.sink import WebhookSink

    register("webhook", WebhookSink)
