"""A small threaded HTTP(S) server for the project's emulators.

Emulators are :class:`App` objects: a list of routes ``(method, regex) -> handler`` where a
handler takes a :class:`Request` and returns a :class:`Response`. :class:`EmulatorServer` serves
an app on 127.0.0.1 (a free port by default), over HTTPS with a certificate signed by a CA it
generates (written to ``ca.pem`` for clients) or over plain HTTP.

Requests over ``max_body`` bytes are refused with 413 before their body is read.
"""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import re
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson


@dataclass
class Request:
    """An incoming request. ``query`` maps each parameter to its last value; ``params`` to all."""

    method: str
    path: str
    query: dict[str, str]
    params: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    match: re.Match[str] | None = None
    raw_target: str = ""

    def json(self) -> Any:
        return orjson.loads(self.body)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        h = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return cls(status, orjson.dumps(data), h)

    @classmethod
    def empty(cls, status: int = 204, headers: dict[str, str] | None = None) -> Response:
        return cls(status, b"", dict(headers or {}))


Handler = Callable[[Request], Response]


class App:
    """Routes requests to handlers. Subclass and call :meth:`route`, or use it as a decorator."""

    max_body = 32 * 1024 * 1024

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.base_url = ""  # set by EmulatorServer once listening

    def route(self, method: str, pattern: str, handler: Handler | None = None) -> Any:
        compiled = re.compile(pattern + r"\Z")

        def add(fn: Handler) -> Handler:
            self.routes.append((method.upper(), compiled, fn))
            return fn

        return add(handler) if handler is not None else add

    def not_found(self, request: Request) -> Response:
        return Response.json({"error": {"code": "NotFound", "message": f"no route for {request.path}"}}, 404)

    def handle(self, request: Request) -> Response:
        allowed = False
        for method, pattern, handler in self.routes:
            m = pattern.match(request.path)
            if m is None:
                continue
            allowed = True
            if method == request.method:
                request.match = m
                return handler(request)
        if allowed:
            return Response.json({"error": {"code": "MethodNotAllowed", "message": request.method}}, 405)
        return self.not_found(request)


def _make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "dlpfwd-emulator"
        timeout = 120  # seconds of client silence before the connection is dropped
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
            pass

        def _serve(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            length = int(headers.get("content-length", "0") or 0)
            if length > app.max_body:
                self._send(
                    Response.json({"error": {"code": "PayloadTooLarge", "message": "body too large"}}, 413), close=True
                )
                return
            body = self.rfile.read(length) if length else b""
            if headers.get("content-encoding", "").lower() == "gzip" and getattr(app, "auto_gunzip", True):
                try:
                    body = gzip.decompress(body)
                except (OSError, EOFError):
                    self._send(Response.json({"error": {"code": "BadGzip", "message": "invalid gzip"}}, 400))
                    return
            parts = urlsplit(self.path)
            params = parse_qs(parts.query, keep_blank_values=True)
            request = Request(
                method=self.command,
                path=parts.path,
                query={k: v[-1] for k, v in params.items()},
                params=params,
                headers=headers,
                body=body,
                raw_target=self.path,
            )
            try:
                response = app.handle(request)
            except Exception as exc:  # noqa: BLE001 - an emulator bug must answer, not hang
                response = Response.json({"error": {"code": "InternalError", "message": repr(exc)}}, 500)
            self._send(response)

        def _send(self, response: Response, close: bool = False) -> None:
            # send_response_only: the app's own Date (an emulated clock) is the only one sent.
            self.log_request(response.status)
            self.send_response_only(response.status)
            headers = dict(response.headers)
            if not any(name.lower() == "date" for name in headers):
                headers["Date"] = _http_date()
            headers.setdefault("Server", self.version_string())
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if response.body and self.command != "HEAD":
                self.wfile.write(response.body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _serve

    return _Handler


class _Server(ThreadingHTTPServer):
    """A threaded server that stays quiet about clients that hang up or fail the TLS handshake."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


def _http_date() -> str:
    from email.utils import formatdate

    return formatdate(usegmt=True)


class EmulatorServer:
    """Serves ``app`` on ``host:port`` in a background thread (``port=0`` picks a free one)."""

    def __init__(
        self, app: App, host: str = "127.0.0.1", port: int = 0, tls: bool = True, cert_dir: str | Path | None = None
    ) -> None:
        self.app = app
        self.tls = tls
        self.httpd = _Server((host, port), _make_handler(app))
        self.httpd.daemon_threads = True
        self.ca_file = ""
        if tls:
            if cert_dir is None:
                raise ValueError("cert_dir is required for TLS")
            ca, cert, key = ensure_certificates(Path(cert_dir), host)
            self.ca_file = str(ca)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(cert), str(key))
            # The handshake runs on first read, in the connection's own thread: a client that
            # connects and says nothing cannot stall the accepting thread (and so the server).
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        address = self.httpd.server_address
        self.host, self.port = str(address[0]), int(address[1])
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{self.host}:{self.port}"
        app.base_url = self.url
        self._thread: threading.Thread | None = None

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="emulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_certificates(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """Create (once) a CA and a server certificate for ``host``, ``localhost`` and 127.0.0.1.

    Returns (ca.pem, server.pem, server.key). Existing files are reused, so clients that
    trusted ``ca.pem`` keep working across restarts.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    if ca_path.exists() and cert_path.exists() and key_path.exists():
        return ca_path, cert_path, key_path
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dlpfwd emulator CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for candidate in {host, "127.0.0.1"}:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(candidate)))
        except ValueError:
            names.append(x509.DNSName(candidate))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return ca_path, cert_path, key_path
