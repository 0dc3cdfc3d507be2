"""``dlpfwd serve``: the inbound HTTPS endpoint that accepts Defender XDR incident status changes
from anything (a SOAR, a Splunk alert action, a script) and stores them durably in the
status-sync inbox, from which an applier writes them to Defender.

Modules: :mod:`~forwarder.serve.settings` (``[serve]``), :mod:`~forwarder.serve.request` (the
JSON schema), :mod:`~forwarder.serve.auth` (HMAC signature or bearer token),
:mod:`~forwarder.serve.inbox` (durable hand-off, idempotency), :mod:`~forwarder.serve.app`
(the checks and answers), :mod:`~forwarder.serve.server` (HTTPS), :mod:`~forwarder.serve.worker`
(applying accepted changes where no ServiceNow sync runs; purging old change ids),
:mod:`~forwarder.serve.command` (the CLI command). The contract for clients is in ``docs/itsm.md`` ("Inbound endpoint").
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from forwarder.serve.settings import ServeSettings, problems

if TYPE_CHECKING:
    from forwarder.serve.app import HEALTH, STATUS_CHANGES, StatusEndpoint
    from forwarder.serve.inbox import Enqueue
    from forwarder.serve.server import ServeServer

__all__ = ["HEALTH", "STATUS_CHANGES", "ServeServer", "ServeSettings", "StatusEndpoint", "build_server", "problems"]

#: Names re-exported lazily: every ``dlpfwd`` command imports this package (through the
#: ``serve`` command's module), and the HTTP server, TLS and app modules are needed only to serve.
_LAZY = {
    "HEALTH": "forwarder.serve.app",
    "STATUS_CHANGES": "forwarder.serve.app",
    "StatusEndpoint": "forwarder.serve.app",
    "ServeServer": "forwarder.serve.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def build_server(
    settings: ServeSettings,
    store: Any,
    insecure_plain_http: bool = False,
    enqueue: Enqueue | None = None,
    log: logging.Logger | None = None,
) -> ServeServer:
    """The endpoint for ``settings`` over ``store`` (not started). The caller has checked
    :func:`problems` first; ``insecure_plain_http`` serves without TLS; ``enqueue`` defaults to
    :func:`forwarder.serve.inbox.sync_enqueue`."""
    from forwarder.serve.app import StatusEndpoint
    from forwarder.serve.auth import Authenticator
    from forwarder.serve.inbox import StoreInbox, sync_enqueue
    from forwarder.serve.server import ServeServer, tls_context

    keys = [s.reveal() for s in (settings.hmac_secret, settings.hmac_previous_secret) if s]
    tokens = [settings.bearer_token.reveal()] if settings.bearer_token else []
    endpoint = StatusEndpoint(
        Authenticator(keys, tokens, settings.replay_window),
        StoreInbox(store, enqueue or sync_enqueue),
        max_body=settings.max_body,
        log=log,
    )
    tls = None if insecure_plain_http else tls_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    return ServeServer(endpoint, settings.bind, settings.port, tls, settings.max_connections, settings.request_timeout)
