"""``dlpfwd serve``: run the inbound status-change endpoint until SIGTERM or Ctrl-C.

Reads ``[serve]``, ``[forwarder] state_dir`` and the sources and sinks of the configuration;
the TLS certificate is required unless ``--insecure-plain-http`` (local tests only). Without a
sync-enabled servicenow sink it applies the accepted changes to Defender XDR itself
(:mod:`forwarder.serve.worker`, with the graph_security source of ``[serve] source``); with
one, that sink's status sync (``dlpfwd run`` / ``dlpfwd sync``) applies them. ``--bind`` / ``--port``
override the configuration; ``--health`` only asks the running endpoint's ``/healthz``.
Exit codes: 0 stopped by a signal (``--health``: healthy), 2 configuration error (each
problem with its key path), 1 the endpoint could not start (port in use, unreadable key) or
is not healthy.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from forwarder.hookspecs import hookimpl

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("dlpfwd.serve")


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bind", metavar="ADDRESS", help="listen address (default: [serve] bind, 127.0.0.1)")
    parser.add_argument("--port", type=int, metavar="N", help="TCP port (default: [serve] port, 8443; 0 = any free)")
    parser.add_argument(
        "--health",
        action="store_true",
        help="do not serve: ask the running endpoint's /healthz on this host (exit 0 ok, 1 not)",
    )
    parser.add_argument(
        "--insecure-plain-http",
        action="store_true",
        help="serve plain HTTP without TLS: local tests only, never on a network",
    )


def _serve(args: argparse.Namespace) -> int:
    from forwarder.config import load_config
    from forwarder.errors import ConfigError
    from forwarder.logs import redact, setup_logging
    from forwarder.serve import build_server, problems
    from forwarder.serve.inbox import sync_enqueue
    from forwarder.serve.settings import ServeSettings
    from forwarder.serve.worker import ServeWorker
    from forwarder.state import open_store
    from forwarder.sync.inbound import applier_problems

    config = load_config(args.config, args.host)
    if not getattr(args, "log_level", None):
        setup_logging(config.forwarder.log_level)
    settings: ServeSettings = getattr(config, "serve", None) or ServeSettings()
    if args.bind:
        settings.bind = args.bind
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise ConfigError([f"--port: expected 0-65535, got {args.port}"])
        settings.port = args.port
    if args.health:
        return _health(settings, args.insecure_plain_http)
    found = problems(settings, insecure=args.insecure_plain_http)
    found += applier_problems(config)
    if found:
        raise ConfigError(found)
    store = open_store(config.forwarder.state_dir)
    worker: ServeWorker | None = None
    try:
        lock = os.path.join(config.forwarder.state_dir, "serve-apply.lock")
        worker = running = ServeWorker(store, settings, _applier(config, store), lock_path=lock)

        def enqueue(store: Any, change: Any) -> Any:
            added = sync_enqueue(store, change)
            running.wake()
            return added

        try:
            server = build_server(settings, store, insecure_plain_http=args.insecure_plain_http, enqueue=enqueue)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            print(redact(f"dlpfwd serve: cannot start: {type(exc).__name__}: {exc}"), file=sys.stderr)
            return EXIT_FAILED
        stop = threading.Event()
        previous = {s: signal.signal(s, lambda signum, frame: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            server.start()
            # One line on stderr whatever the log level: scripts and tests read the URL from it.
            print(f"dlpfwd serve: listening on {server.url}", file=sys.stderr, flush=True)
            _say_who_applies(config)
            worker.start()
            if args.insecure_plain_http:
                log.warning("serving plain HTTP (--insecure-plain-http): for local tests only")
            log.info("state %s; SIGTERM or Ctrl-C stops it", config.forwarder.state_dir)
            stop.wait()
        finally:
            server.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        log.info("dlpfwd serve stopped")
        return EXIT_OK
    finally:
        if worker is not None:
            worker.stop()
            if worker.applier is not None:
                worker.applier.close()
        store.close()


def _health(settings: Any, plain: bool) -> int:
    """``GET /healthz`` of the endpoint listening on this host (a container or monitoring probe).
    Liveness only: the certificate is not verified (it names the public host, not loopback)."""
    import ssl
    import urllib.error
    import urllib.request

    host = settings.bind if settings.bind not in ("0.0.0.0", "::", "") else "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    url = f"{'http' if plain else 'https'}://{shown}:{settings.port}/healthz"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=10, context=None if plain else context) as response:  # noqa: S310
            ok = response.status == 200
    except (OSError, ValueError) as exc:
        print(f"dlpfwd serve --health: {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return EXIT_FAILED
    print(f"dlpfwd serve --health: {url}: {'ok' if ok else 'unhealthy'}")
    return EXIT_OK if ok else EXIT_FAILED


def _applier(config: Any, store: Any) -> Any:
    """The :class:`forwarder.sync.inbound.InboundApplier` when serve applies, else None."""
    from forwarder.sync.inbound import InboundApplier, applies_inbound

    return InboundApplier.build(config, store) if applies_inbound(config) else None


def _say_who_applies(config: Any) -> None:
    """One line naming what applies the accepted changes (docs/itsm.md, "How accepted changes are applied")."""
    from forwarder.sync.inbound import applies_inbound, serve_source
    from forwarder.sync.loop import sync_sinks

    if applies_inbound(config):
        log.info("accepted changes are applied to Defender XDR with source %s's app", serve_source(config).name)
    else:
        names = ", ".join(s.name for s in sync_sinks(config))
        log.info("accepted changes are applied by the status sync of sink %s (dlpfwd run or dlpfwd sync)", names)


@hookimpl
def dlpfwd_register_commands(register: Callable[..., Any]) -> None:
    register(
        "serve",
        "accept Defender XDR incident status changes over HTTPS (HMAC or bearer auth) into the sync inbox",
        _configure,
        _serve,
    )
