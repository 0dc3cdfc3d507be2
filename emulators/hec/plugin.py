"""Entry point ``emulator_hec``: the ``dlpfwd hec-emulator`` command.

Runs the HEC emulator in the foreground for dry runs and benchmarks. It prints one line,
``HEC emulator listening on <url> token=<token> ca=<ca.pem>`` (flushed), once it accepts
connections, and serves until interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from emulators.cli import add_listen_arguments, serve_until_interrupted
from forwarder.hookspecs import hookimpl


def configure(parser: argparse.ArgumentParser) -> None:
    from emulators.hec.app import DEFAULT_TOKEN

    add_listen_arguments(parser, port=8088, state_dir="./dlpfwd-hec-emulator", older_http="--plain-http")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the HEC token to accept (a GUID)")
    parser.add_argument("--index", action="append", default=[], help="allowed index (repeat; default: any)")
    parser.add_argument("--default-index", default="main", metavar="NAME", help="the token's default index")
    parser.add_argument("--ack", action="store_true", help="enable indexer acknowledgement (useACK) on the token")
    parser.add_argument("--ack-delay", type=float, default=0.0, metavar="S", help="seconds before an ack turns true")
    parser.add_argument(
        "--max-content-length", type=int, default=800 * 1024 * 1024, metavar="BYTES", help="413 above this size"
    )
    parser.add_argument("--busy-rate", type=float, default=0.0, metavar="P", help="share of requests answered 503")
    parser.add_argument("--drop-acks", action="store_true", help="acks never turn true (senders must re-send)")
    parser.add_argument("--indexer-delay", type=float, default=0.0, metavar="S", help="seconds before each answer")
    parser.add_argument(
        "--record-limit", type=int, default=100_000, metavar="N", help="keep the latest N events (/_emulator/indexed)"
    )


def run(args: argparse.Namespace) -> int:
    from emulators.heap import keep_large_buffers_on_heap
    from emulators.hec.app import HecApp, TokenConfig
    from emulators.httpd import EmulatorServer

    keep_large_buffers_on_heap()  # a process of its own: requests of about 1 MB are inflated
    app = HecApp(
        {args.token: TokenConfig(indexes=args.index, default_index=args.default_index, use_ack=args.ack)},
        max_content_length=args.max_content_length,
        ack_delay=args.ack_delay,
        record_limit=args.record_limit or None,
    )
    app.busy_rate = args.busy_rate
    app.drop_acks = args.drop_acks
    app.indexer_delay = args.indexer_delay
    server = EmulatorServer(app, host=args.bind, port=args.port, tls=not args.http, cert_dir=args.state_dir)
    no_delay(server)
    print(
        f"HEC emulator listening on {server.url} token={args.token} ca={server.ca_file or '-'}",
        flush=True,
    )
    serve_until_interrupted(server)
    return 0


def no_delay(server: Any) -> None:
    """Send responses without Nagle's delay: the status line and the body go out in two writes,
    and the second would otherwise wait for the client's delayed ACK (about 40 ms per request)."""
    server.httpd.RequestHandlerClass.disable_nagle_algorithm = True


@hookimpl
def dlpfwd_register_commands(register: Callable[..., Any]) -> None:
    register("hec-emulator", "run a Splunk HTTP Event Collector emulator (dry runs, tests)", configure, run)


def main(argv: list[str] | None = None) -> int:
    """``python -m emulators.hec`` -- the same command without the plugin host."""
    parser = argparse.ArgumentParser(prog="python -m emulators.hec", description="Splunk HEC emulator")
    configure(parser)
    return run(parser.parse_args(sys.argv[1:] if argv is None else argv))
