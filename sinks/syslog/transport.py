"""Syslog transports: UDP (RFC 5426), TCP (RFC 6587) and TLS (RFC 5425), with framing.

Contract:

* :func:`frame` applies the stream framing: octet counting (``LEN SP MSG``, RFC 6587 3.4.1,
  mandatory for RFC 5425) or newline termination (``MSG LF``, 3.4.2). Our formatters never
  put a raw LF in a message, so newline framing is safe too. UDP sends one message per
  datagram, unframed.
* ``send(frames)`` writes everything or raises :class:`OSError` (``ssl.SSLError`` included);
  after a failure the transport is closed and must be reconnected.
* ``unacked_bytes()`` (stream transports, Linux) is how many bytes written so far the peer's
  TCP stack has not acknowledged yet (``SIOCOUTQ``), ``None`` where the platform cannot say.
  With TLS the count is in wire bytes, which are never fewer than the plaintext bytes they
  carry, so ``sent - unacked`` never over-states what the peer holds.
* ``alive()`` probes, without blocking, whether the peer closed or reset the connection.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import ssl
import struct
import termios
from abc import ABC, abstractmethod

OCTET_COUNTING = "octet_counting"
NEWLINE = "newline"

#: Largest UDP payload over IPv4.
UDP_MAX = 65507


def frame(message: bytes, framing: str) -> bytes:
    """One message framed for a stream transport."""
    if framing == OCTET_COUNTING:
        return b"%d %b" % (len(message), message)
    return message + b"\n"


class Transport(ABC):
    """One connection to a syslog receiver."""

    stream: bool = True

    @abstractmethod
    def connect(self) -> None:
        """Open the connection; raises OSError (ssl errors included) on failure."""

    @abstractmethod
    def send(self, frames: list[bytes]) -> None:
        """Write every frame, in order."""

    def unacked_bytes(self) -> int | None:
        return None

    def alive(self) -> bool:
        return True

    @abstractmethod
    def close(self) -> None:
        """Release the connection; idempotent."""


class UdpTransport(Transport):
    """Datagrams through a connected UDP socket (so ICMP port-unreachable surfaces as an error)."""

    stream = False

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock: socket.socket | None = None

    def connect(self) -> None:
        self.close()
        last: OSError | None = None
        for family, kind, proto, _, address in socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM):
            sock = socket.socket(family, kind, proto)
            try:
                sock.connect(address)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            self.sock = sock
            return
        raise last or OSError(f"cannot resolve {self.host}")

    def send(self, frames: list[bytes]) -> None:
        if self.sock is None:
            raise OSError(errno.ENOTCONN, "not connected")
        for datagram in frames:
            self.sock.send(datagram)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class TcpTransport(Transport):
    """A TCP connection (optionally wrapped in TLS by :class:`TlsTransport`)."""

    CHUNK = 256 * 1024

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None

    def _open(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return sock

    def connect(self) -> None:
        self.close()
        self.sock = self._open()

    def send(self, frames: list[bytes]) -> None:
        if self.sock is None:
            raise OSError(errno.ENOTCONN, "not connected")
        data = b"".join(frames)
        view = memoryview(data)
        for start in range(0, len(data), self.CHUNK):
            self.sock.sendall(view[start : start + self.CHUNK])

    def unacked_bytes(self) -> int | None:
        if self.sock is None:
            return None
        try:
            raw = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
        except (OSError, ValueError):
            return None
        value: int = struct.unpack("i", raw)[0]
        return value

    def alive(self) -> bool:
        sock = self.sock
        if sock is None:
            return False
        sock.setblocking(False)
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        finally:
            if self.sock is not None:
                sock.settimeout(self.timeout)
        return data != b""  # b"" = the peer closed its side (syslog receivers never talk back)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


class TlsTransport(TcpTransport):
    """RFC 5425: TLS over TCP; the server certificate is verified unless configured otherwise."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext, server_name: str) -> None:
        super().__init__(host, port, timeout)
        self.context = context
        self.server_name = server_name or host

    def _open(self) -> socket.socket:
        raw = super()._open()
        try:
            return self.context.wrap_socket(raw, server_hostname=self.server_name)
        except BaseException:
            raw.close()
            raise

    def alive(self) -> bool:
        sock = self.sock
        if not isinstance(sock, ssl.SSLSocket):
            return False
        sock.setblocking(False)
        try:
            data = sock.recv(1)  # processes TLS 1.3 session tickets; b"" on close_notify / EOF
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return True
        except (OSError, ValueError):
            return False
        finally:
            if self.sock is not None:
                sock.settimeout(self.timeout)
        return data != b""


def tls_context(
    ca_bundle: str = "",
    verify: bool = True,
    client_cert: str = "",
    client_key: str = "",
    min_version: str = "TLSv1.2",
) -> ssl.SSLContext:
    """A client context: system CAs (or ``ca_bundle``), hostname checking, TLS >= ``min_version``."""
    context = ssl.create_default_context(cafile=ca_bundle or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert:
        context.load_cert_chain(client_cert, client_key or None)
    return context
