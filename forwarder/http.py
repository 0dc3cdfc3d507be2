"""HTTP plumbing shared by plugins: client construction from :class:`HttpSettings`, Retry-After
parsing, and translation of httpx exceptions into :mod:`forwarder.errors`."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import ssl
from collections.abc import Iterator
from typing import Any

import httpx

from forwarder import __version__
from forwarder.errors import NotConnected, RetriableError
from forwarder.settings import HttpSettings

USER_AGENT = f"dlpfwd/{__version__}"


def tls_config(http: HttpSettings) -> ssl.SSLContext | bool:
    """What httpx takes as ``verify``: an SSL context when a CA bundle, a client certificate or
    disabled verification is configured, else ``True`` (httpx's default trust store)."""
    if http.verify and not http.ca_bundle and not http.client_cert:
        return True
    if not http.verify and not http.client_cert:
        return False
    ctx = ssl.create_default_context(cafile=http.ca_bundle or None)
    if not http.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if http.client_cert:
        ctx.load_cert_chain(http.client_cert, http.client_key or None)
    return ctx


def make_client(http: HttpSettings, **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` honouring the CA bundle, proxy, verification, client certificate and timeout."""
    headers = {"User-Agent": USER_AGENT, **kwargs.pop("headers", {})}
    return httpx.Client(
        verify=tls_config(http),
        proxy=http.proxy or None,
        timeout=httpx.Timeout(http.timeout),
        headers=headers,
        **kwargs,
    )


def retry_after(response: httpx.Response, now: dt.datetime | None = None) -> float | None:
    """Seconds the server asked us to wait (``Retry-After`` as seconds or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


@contextlib.contextmanager
def map_exceptions(what: str) -> Iterator[None]:
    """Translate httpx transport errors into NotConnected / RetriableError naming ``what``.

    The message never includes request headers, so tokens cannot leak through it.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        raise RetriableError(f"{what}: timed out ({type(exc).__name__})") from None
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise NotConnected(f"{what}: {type(exc).__name__}: {_short(exc)}") from None
    except httpx.TransportError as exc:
        raise RetriableError(f"{what}: {type(exc).__name__}: {_short(exc)}") from None


def _short(exc: Exception) -> str:
    text = str(exc)
    return text[:300]
