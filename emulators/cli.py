"""Command-line pieces the emulator commands share: the listening flags, serving until Ctrl-C."""

from __future__ import annotations

import argparse
from typing import Any


def add_listen_arguments(
    parser: argparse.ArgumentParser,
    *,
    port: int,
    state_dir: str,
    state_help: str = "where the TLS CA and certificate are kept",
    http_help: str = "plain HTTP instead of HTTPS",
    older_http: str = "",
) -> None:
    """``--host ADDRESS`` (stored as ``bind``: the CLI keeps its plugin host in ``args.host``),
    ``--port PORT`` (0: a free one), ``--http`` and ``--state-dir DIR``, spelled alike by every
    emulator command. ``older_http`` names an older spelling of ``--http`` that still parses, as
    ``--cert-dir`` does for ``--state-dir`` then (both hidden from ``--help``)."""
    parser.add_argument(
        "--host", dest="bind", metavar="ADDRESS", default="127.0.0.1", help="address to listen on (loopback)"
    )
    default = f"; default {port}" if port else ""
    parser.add_argument("--port", type=int, default=port, metavar="PORT", help=f"port (0: a free one{default})")
    parser.add_argument("--http", action="store_true", help=http_help)
    parser.add_argument("--state-dir", default=state_dir, metavar="DIR", help=state_help)
    if older_http:
        parser.add_argument(older_http, dest="http", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument("--cert-dir", dest="state_dir", help=argparse.SUPPRESS)


def serve_until_interrupted(server: Any) -> None:
    """Serve ``server`` (an :class:`emulators.httpd.EmulatorServer`) in the foreground until Ctrl-C."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
