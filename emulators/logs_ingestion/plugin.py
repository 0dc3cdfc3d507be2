"""The ``logs-ingestion-emulator`` command: serve the Logs Ingestion API emulator on loopback.

Example (with the tenant emulator issuing tokens)::

    dlpfwd logs-ingestion-emulator --port 8443 --state-dir ./li-state \\
        --jwks-url https://127.0.0.1:9443/<tenant>/discovery/v2.0/keys --ca-file ./tenant-state/ca.pem \\
        --allow-app <client id> --out rows.jsonl

It prints the endpoint URL, the DCR immutable id, the stream and the CA file to trust, then
serves until interrupted. Also runnable as ``python -m emulators.logs_ingestion``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from emulators.cli import add_listen_arguments, serve_until_interrupted
from forwarder.hookspecs import hookimpl

DEFAULT_DCR = "dcr-00000000000000000000000000000000"


def configure(parser: argparse.ArgumentParser) -> None:
    add_listen_arguments(
        parser,
        port=0,
        state_dir="./logs-ingestion-emulator",
        http_help="plain HTTP instead of HTTPS (the sink requires https)",
        older_http="--no-tls",
    )
    parser.add_argument("--dcr", default=DEFAULT_DCR, metavar="ID", help="DCR immutable id to serve")
    parser.add_argument("--stream", default="Custom-PurviewDLP_CL", metavar="NAME", help="stream declared in the DCR")
    parser.add_argument(
        "--allow-app", action="append", default=None, metavar="APP_ID", help="app id holding the role (repeatable)"
    )
    parser.add_argument(
        "--audience", default="https://monitor.azure.com", metavar="URI", help="token audience to require"
    )
    parser.add_argument("--public-key", default="", metavar="FILE", help="PEM public key that signs accepted tokens")
    parser.add_argument(
        "--jwks-file", default="", metavar="FILE", help="JWKS JSON file with the keys that sign accepted tokens"
    )
    parser.add_argument(
        "--jwks-url", default="", metavar="URL", help="JWKS URL (e.g. the tenant emulator's discovery keys)"
    )
    parser.add_argument("--ca-file", default="", metavar="FILE", help="CA bundle to trust when fetching --jwks-url")
    parser.add_argument("--limit", type=int, default=1_048_576, metavar="BYTES", help="per-call size limit in bytes")
    parser.add_argument("--strict", action="store_true", help="refuse values that do not match their column type")
    parser.add_argument(
        "--keep-rows", type=int, default=100_000, metavar="N", help="rows kept in memory for inspection"
    )
    parser.add_argument("--out", default="", metavar="FILE", help="append accepted rows to this JSON-lines file")


def build_app(args: argparse.Namespace) -> Any:
    """The configured :class:`LogsIngestionApp` for parsed ``args``."""
    from emulators.logs_ingestion.app import Dcr, LogsIngestionApp
    from emulators.tenant.tokens import TokenVerifier
    from sinks.sentinel.columns import COLUMNS

    verifier: Any
    if args.jwks_url:
        import ssl

        import httpx

        verify: Any = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else True
        jwks = httpx.get(args.jwks_url, verify=verify, timeout=10).json()
        verifier = TokenVerifier(jwks, leeway=60)
    elif args.jwks_file:
        verifier = TokenVerifier(orjson.loads(Path(args.jwks_file).read_bytes()), leeway=60)
    elif args.public_key:
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        key = load_pem_public_key(Path(args.public_key).read_bytes())
        if not isinstance(key, rsa.RSAPublicKey):
            raise SystemExit(f"logs-ingestion-emulator: {args.public_key} is not an RSA public key")
        verifier = TokenVerifier(key, leeway=60)
    else:
        raise SystemExit("logs-ingestion-emulator: give --jwks-url, --jwks-file or --public-key")
    streams = {args.stream: {c.name: c.type for c in COLUMNS}}
    allowed = set(args.allow_app) if args.allow_app else None
    sink: Callable[[str, list[dict[str, Any]]], None] | None = None
    if args.out:
        lock = threading.Lock()
        out = Path(args.out)

        def sink(stream: str, rows: list[dict[str, Any]]) -> None:
            data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
            with lock, out.open("ab") as fh:
                fh.write(data)

    return LogsIngestionApp(
        verifier,
        [Dcr(args.dcr, streams, allowed)],
        audience=args.audience,
        limit=args.limit,
        strict=args.strict,
        keep_rows=args.keep_rows,
        sink=sink,
    )


def run(args: argparse.Namespace) -> int:
    from emulators.heap import keep_large_buffers_on_heap
    from emulators.httpd import EmulatorServer

    keep_large_buffers_on_heap()  # a process of its own: 1 MB bodies are inflated per call
    app = build_app(args)
    server = EmulatorServer(app, host=args.bind, port=args.port, tls=not args.http, cert_dir=args.state_dir)
    print(f"endpoint = {server.url}", flush=True)
    print(f"dcr_immutable_id = {args.dcr}", flush=True)
    print(f"stream = {args.stream}", flush=True)
    if server.ca_file:
        # Absolute: the sink's configuration is rarely in the emulator's working directory.
        print(f"ca_bundle = {os.path.abspath(server.ca_file)}", flush=True)
    serve_until_interrupted(server)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="logs-ingestion-emulator", description=__doc__.splitlines()[0])
    configure(parser)
    return run(parser.parse_args(argv))


@hookimpl
def dlpfwd_register_commands(register: Callable[..., None]) -> None:
    register("logs-ingestion-emulator", "serve the Azure Monitor Logs Ingestion API emulator", configure, run)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
