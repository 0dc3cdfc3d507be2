"""Start-up checks of the status sync and of ``dlpfwd serve``, for ``dlpfwd check``: the
problems those commands would refuse to start with, found before they are started, each
naming its key path.

* ``[serve]`` (when the file has the table, setting anything): the checks of
  :func:`forwarder.serve.settings.problems` as ``dlpfwd serve`` runs them without
  ``--insecure-plain-http`` (a TLS certificate, a credential, secret lengths); the
  certificate, key and client CA loaded as the server loads them (readable PEM, the key
  matching the certificate); the applying source (``serve.source``) resolvable when
  ``dlpfwd serve`` applies the changes (no sync-enabled servicenow sink).
* ``[sinks.sync]``: at most one sync-enabled servicenow sink, whose ``sync.source`` resolves to
  exactly one graph_security source.

Nothing is connected to; ``dlpfwd check --probe`` does that.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from forwarder.errors import ConfigError


def startup_problems(config: Any) -> list[str]:
    """Every start-up problem of ``[serve]`` and ``[sinks.sync]`` in ``config``; see the module docstring."""
    return serve_problems(config) + sync_problems(config)


def serve_problems(config: Any, path: str = "serve") -> list[str]:
    from forwarder.serve.settings import configured, problems

    settings = getattr(config, "serve", None)
    if settings is None or not configured(settings):
        return []
    from forwarder.sync.inbound import applier_problems, applies_inbound

    found = problems(settings, insecure=False, path=path)
    found += tls_problems(settings, path)
    found += applier_problems(config)
    if settings.source and not applies_inbound(config):
        graphs = [s.name for s in config.sources if s.type == "graph_security"]
        if settings.source not in graphs:
            found.append(f"{path}.source: no graph_security source named {settings.source!r}")
    return found


def tls_problems(settings: Any, path: str = "serve") -> list[str]:
    """Whether the TLS files load as ``dlpfwd serve`` loads them (missing files are reported by
    :func:`forwarder.serve.settings.problems`)."""
    found: list[str] = []
    cert, key, client_ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca
    if cert and os.path.isfile(cert) and (not key or os.path.isfile(key)):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(cert, key or None)
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
                found.append(f"{path}.tls_key: does not match the certificate in {path}.tls_cert")
            else:
                which = f"{path}.tls_cert / {path}.tls_key" if key else f"{path}.tls_cert"
                found.append(f"{which}: cannot load the certificate and its private key as PEM ({exc.reason})")
        except OSError as exc:
            found.append(f"{path}.tls_cert: cannot read: {exc.strerror}")
    if client_ca and os.path.isfile(client_ca):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_verify_locations(client_ca)
        except (ssl.SSLError, OSError) as exc:
            found.append(f"{path}.tls_client_ca: cannot load as a PEM CA bundle ({getattr(exc, 'reason', exc)})")
    return found


def sync_problems(config: Any) -> list[str]:
    from forwarder.sync.loop import graph_source, sync_sinks

    enabled = sync_sinks(config)
    found: list[str] = []
    if len(enabled) > 1:
        names = ", ".join(f"sinks.{s.name}.sync.enabled" for s in enabled)
        found.append(f"{names}: the status sync supports one servicenow sink per deployment")
    for sink in enabled:
        try:
            graph_source(config, sink)
        except ConfigError as exc:
            found += exc.problems
    return found
