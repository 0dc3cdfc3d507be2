"""Registers the ``servicenow-emulator`` command: serve the ServiceNow Table API emulator."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from emulators.cli import add_listen_arguments, serve_until_interrupted
from forwarder.hookspecs import hookimpl


def configure(parser: argparse.ArgumentParser) -> None:
    add_listen_arguments(
        parser,
        port=0,
        state_dir="./servicenow-emulator",
        http_help="plain HTTP instead of HTTPS (the sink insists on https URLs)",
        older_http="--no-tls",
    )
    parser.add_argument("--listen", dest="bind", help=argparse.SUPPRESS)  # the older spelling of --host
    parser.add_argument("--user", default="dlpfwd", metavar="NAME", help="basic-auth user name")
    parser.add_argument(
        "--password-env",
        default="SN_EMULATOR_PASSWORD",
        metavar="VAR",
        help="environment variable holding the basic-auth password (default SN_EMULATOR_PASSWORD)",
    )
    parser.add_argument(
        "--client-id", default="dlpfwd-client", metavar="ID", help="OAuth client id (client_credentials)"
    )
    parser.add_argument(
        "--client-secret-env",
        default="SN_EMULATOR_CLIENT_SECRET",
        metavar="VAR",
        help="environment variable holding the OAuth client secret (default SN_EMULATOR_CLIENT_SECRET)",
    )
    parser.add_argument(
        "--table", action="append", default=[], metavar="TABLE", help="restrict valid tables (repeatable)"
    )
    parser.add_argument(
        "--throttle", type=int, default=0, metavar="N", help="answer the first N Table API requests with 429"
    )
    parser.add_argument(
        "--retry-after", type=int, default=1, metavar="SECONDS", help="Retry-After seconds of those 429s"
    )


def run(args: argparse.Namespace) -> int:
    from emulators.httpd import EmulatorServer
    from emulators.servicenow.app import ServiceNowApp

    password = os.environ.get(args.password_env, "")
    client_secret = os.environ.get(args.client_secret_env, "")
    if not password and not client_secret:
        print(
            f"set {args.password_env} and/or {args.client_secret_env}: the emulator accepts no empty credentials",
            file=sys.stderr,
        )
        return 2
    users = {args.user: password} if password else {}
    clients = {args.client_id: (client_secret, args.user)} if client_secret else {}
    app = ServiceNowApp(users=users, clients=clients)
    if args.table:
        app.tables = set(args.table)
    if args.throttle:
        app.throttle(args.throttle, args.retry_after)
    server = EmulatorServer(app, host=args.bind, port=args.port, tls=not args.http, cert_dir=args.state_dir)
    print(
        f"ServiceNow emulator listening on {server.url}"
        + (f" (CA: {os.path.abspath(server.ca_file)})" if server.ca_file else ""),
        flush=True,
    )
    serve_until_interrupted(server)
    return 0


@hookimpl
def dlpfwd_register_commands(register: Callable[..., Any]) -> None:
    register("servicenow-emulator", "serve a ServiceNow Table API emulator (tests, dry runs)", configure, run)
