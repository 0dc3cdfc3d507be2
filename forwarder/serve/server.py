"""The HTTPS server of ``dlpfwd serve``: :mod:`http.server` threads over :mod:`ssl`.

* TLS 1.2 or later with the configured certificate; optional client certificates
  (``tls_client_ca``). Plain HTTP only when explicitly asked (local tests).
* The TLS handshake and every read run in the connection's own thread with a deadline
  (``request_timeout``): a silent or slow client holds one thread for at most that long and
  never stalls the listener.
* At most ``max_connections`` connections are served at once; one more gets ``503`` and is
  closed.
* Each request (with the keep-alive wait before it) must complete within twice
  ``request_timeout``: a client dripping bytes is cut off and frees its slot.
* HTTP/1.1 keep-alive; a connection whose request body was not read (refused early) is closed;
  two ``Content-Length`` headers are refused (no guessing which one frames the body).
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from forwarder.serve.app import Answer, StatusEndpoint, error

log = logging.getLogger("dlpfwd.serve")


def tls_context(cert: str, key: str = "", client_ca: str = "") -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+); client certificates required when ``client_ca`` is set."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key or None)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int) -> None:
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(max_connections)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error_ = sys.exc_info()[1]
        if isinstance(error_, ssl.SSLError | ConnectionError | TimeoutError | OSError):
            log.debug(
                "connection from %s ended: %s", client_address[0] if client_address else "?", type(error_).__name__
            )
            return
        log.exception("unexpected error serving %s", client_address[0] if client_address else "?")


def _handler(endpoint: StatusEndpoint, request_timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "dlpfwd"
        sys_version = ""
        disable_nagle_algorithm = True
        timeout = request_timeout  # socket deadline for the TLS handshake and every read

        def handle(self) -> None:
            server: _Server = self.server  # type: ignore[assignment]
            if not server.slots.acquire(blocking=False):
                try:
                    self.close_connection = True
                    self.request_version = "HTTP/1.1"
                    self.command = ""
                    self._send(error(503, "Busy", "too many connections; retry", **{"Retry-After": "1"}), close=True)
                except OSError:
                    pass
                return
            try:
                super().handle()
            finally:
                server.slots.release()

        def handle_one_request(self) -> None:
            # The socket timeout bounds each read, not a request: a client dripping a byte now
            # and then would hold its slot for ever. Past the deadline the connection is cut.
            timer = threading.Timer(2 * request_timeout, self._cut)
            timer.daemon = True
            timer.start()
            try:
                super().handle_one_request()
            finally:
                timer.cancel()

        def _cut(self) -> None:
            log.debug("connection from %s cut: request not complete in time", self.client_address[0])
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the endpoint logs itself
            pass

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            # Malformed request lines and headers: a JSON answer like every other, then close.
            self.close_connection = True
            if self.request_version == "HTTP/0.9":  # not parsed as far as the version: answer in 1.1
                self.request_version = "HTTP/1.1"
            self._send(error(code, "BadRequest" if code == 400 else "HttpError", message or "bad request"), close=True)

        def _serve(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            if len(self.headers.get_all("Content-Length") or []) > 1:  # request smuggling: no guessing
                self._send(error(400, "InvalidContentLength", "more than one Content-Length"), close=True)
                return
            try:
                answer = endpoint.handle(self.command, self.path, headers, self._read, self.client_address[0])
            except (OSError, ConnectionError):
                raise  # the client went away or timed out: nothing to answer
            except Exception:
                log.exception("error handling %s %s", self.command, self.path.split("?", 1)[0])
                answer = error(500, "InternalError", "the request could not be handled; retry")
                answer.close = True
            self._send(answer, close=answer.close)

        def _read(self, length: int) -> bytes:
            data = self.rfile.read(length)
            if len(data) != length:
                raise ConnectionError("the client sent less than its Content-Length")
            return data

        def _send(self, answer: Answer, close: bool = False) -> None:
            body = orjson.dumps(answer.body)
            self.send_response_only(answer.status)
            self.send_header("Date", formatdate(usegmt=True))
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    return Handler


class ServeServer:
    """Serves ``endpoint`` on ``host:port`` (``port=0``: a free one) over TLS (``tls`` context)
    or, when ``tls`` is ``None``, plain HTTP. ``start()`` runs it in a thread; ``serve_forever()``
    in the caller's; ``stop()`` ends either."""

    def __init__(
        self,
        endpoint: StatusEndpoint,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        max_connections: int = 32,
        request_timeout: float = 10.0,
    ) -> None:
        self.httpd = _Server((host, port), _handler(endpoint, request_timeout), max_connections)
        if tls is not None:
            # The handshake runs on the first read, in the connection's thread, under its deadline.
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        address = self.httpd.server_address
        self.host, self.port = str(address[0]), int(address[1])
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{'https' if tls is not None else 'http'}://{shown}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> ServeServer:
        self._thread = threading.Thread(target=self.serve_forever, name="dlpfwd-serve", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.1)  # how soon stop() is noticed

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ServeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
