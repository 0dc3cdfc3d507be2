"""Client-credentials authentication with msal, for every Microsoft cloud.

One :class:`TokenProvider` per (tenant, client) is built from :class:`AuthSettings`; it keeps a
single ``msal.ConfidentialClientApplication`` (and so msal's token cache), reuses a token until
``refresh_margin`` seconds before it expires and then asks for a new one. Tokens and secrets
never reach a log line or an exception message.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forwarder.clouds import CLOUDS, Cloud
from forwarder.errors import FatalError, RetriableError
from forwarder.settings import HttpSettings, Secret, setting


@dataclass
class AuthSettings:
    """``[sources.auth]`` / ``[sinks.auth]``: an Entra ID app registration (client credentials)."""

    tenant_id: str = setting(doc="the tenant (directory) id, a GUID")
    client_id: str = setting(doc="the application (client) id of the app registration")
    client_secret: Secret | None = setting(None, doc="client secret (use ${ENV} or file:); or a certificate")
    certificate: str = setting("", doc="PEM file with the app's certificate (thumbprint derived from it)")
    private_key: str = setting("", doc="PEM file with the certificate's private key (may be the same file)")
    pfx: str = setting("", doc="PFX/PKCS#12 file holding key and certificate, instead of PEM files")
    certificate_password: Secret | None = setting(None, doc="password of the private key or PFX file")
    cloud: str = setting("public", doc="Microsoft cloud", choices=("public", "gcc", "gcc-high", "dod", "china"))
    authority: str = setting("", doc="override of the login host, e.g. the emulator", url=("https", "http"))
    refresh_margin: float = setting(300.0, doc="seconds before expiry when a token is renewed", minimum=0)


def cloud_of(settings: AuthSettings) -> Cloud:
    return CLOUDS[settings.cloud]


class TokenProvider:
    """Hands out bearer tokens for a scope (``https://graph.microsoft.com/.default``...)."""

    def __init__(self, settings: AuthSettings, http: HttpSettings | None = None) -> None:
        import requests

        self.settings = settings
        http = http or HttpSettings()
        session = requests.Session()
        session.verify = (http.ca_bundle or True) if http.verify else False
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override session.verify (psf/requests#3829)
        session.trust_env = session.verify is True
        if http.proxy:
            session.proxies = {"http": http.proxy, "https": http.proxy}
        self.session = session
        self._http = http
        self._credential_value = self._credential()  # file and credential problems show at once
        self._app: Any = None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, float]] = {}
        #: Tokens obtained from the login host (not from a cache); for tests and metrics.
        self.acquired = 0

    def _credential(self) -> Any:
        s = self.settings
        password = s.certificate_password.reveal() if s.certificate_password else None
        if s.pfx:
            if not Path(s.pfx).is_file():
                raise FatalError(f"auth: PFX file {s.pfx} not found")
            cred: dict[str, Any] = {"private_key_pfx_path": s.pfx}
            if password:
                cred["passphrase"] = password
            return cred
        if s.certificate:
            try:
                cert_pem = Path(s.certificate).read_bytes()
                key_pem = Path(s.private_key or s.certificate).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not a PEM text file"
                raise FatalError(f"auth: cannot read the certificate or private key file: {reason}") from None
            cred = {
                "private_key": key_pem,
                "thumbprint": certificate_thumbprint(cert_pem),
                "public_certificate": _first_certificate(cert_pem.decode()),
            }
            if password:
                cred["passphrase"] = password
            return cred
        if s.client_secret:
            return s.client_secret.reveal()
        raise FatalError("auth: set client_secret, certificate (+ private_key) or pfx")

    def token(self, scope: str) -> str:
        """A bearer token for ``scope``, renewed ``refresh_margin`` seconds before it expires.

        Thread-safe; one request to the login host at a time per provider.
        """
        with self._lock:
            cached = self._cache.get(scope)
            if cached and cached[1] - self.settings.refresh_margin > time.time():
                return cached[0]
            if cached:
                # Ours is due for renewal; msal's own cache would still hand out the same token
                # (it only renews 5 minutes before expiry), so drop it there first.
                self._forget(scope)
            result = self._acquire(scope)
            expires_in = float(result.get("expires_in", 3599))
            token = str(result["access_token"])
            self._cache[scope] = (token, time.time() + expires_in)
            self.acquired += 1
            return token

    def _application(self) -> Any:
        """The msal application, built on first use (msal fetches the authority's OpenID
        configuration then: a network step, so it never happens at construction)."""
        if self._app is None:
            import msal

            s = self.settings
            authority_host = s.authority or cloud_of(s).login
            try:
                self._app = msal.ConfidentialClientApplication(
                    s.client_id,
                    client_credential=self._credential_value,
                    authority=f"{authority_host.rstrip('/')}/{s.tenant_id}",
                    http_client=self.session,
                    timeout=self._http.timeout,
                    instance_discovery=False if s.authority else None,
                )
            except ValueError as exc:  # msal: bad authority, unreadable key or PFX
                raise FatalError(f"auth: {_first_line(exc)}") from None
            except Exception as exc:  # noqa: BLE001 - requests/msal transport failures
                raise RetriableError(f"login host {authority_host} unreachable: {root_cause(exc)}") from None
        return self._app

    def _acquire(self, scope: str) -> dict[str, Any]:
        app = self._application()
        try:
            result: dict[str, Any] = app.acquire_token_for_client(scopes=[scope])
        except Exception as exc:  # noqa: BLE001 - msal/requests transport failures
            raise RetriableError(f"token request to the login host failed: {root_cause(exc)}") from None
        if "access_token" not in result:
            code = str(result.get("error", "error"))
            desc = str(result.get("error_description", "")).split("\n")[0][:300]
            if code in ("temporarily_unavailable", "server_error") or code.startswith("http_"):
                raise RetriableError(f"token request failed: {code}: {desc}")
            raise FatalError(f"token request for {scope} failed: {code}: {desc}")
        return result

    def invalidate(self, scope: str) -> None:
        """Forget the token for ``scope`` (after a 401), so the next call fetches a new one."""
        with self._lock:
            self._cache.pop(scope, None)
            self._forget(scope)

    def _forget(self, scope: str) -> None:
        if self._app is None:
            return
        cache = self._app.token_cache
        for entry in list(cache.search(cache.CredentialType.ACCESS_TOKEN, target=[scope])):
            cache.remove_at(entry)


def _first_line(exc: BaseException) -> str:
    """A short, header-free description of a library exception (no tokens, no secrets)."""
    text = str(exc).split("\n")[0]
    return f"{type(exc).__name__}: {text[:200]}"


def root_cause(exc: BaseException, limit: int = 300) -> str:
    """The innermost cause of a library exception as ``Class: message``: readable (no
    ``(Caused by SSLError(SSLCertVerificationErr`` cut mid-word), redacted, on one line and at
    most ``limit`` characters, cut at a word boundary.

    The chain is followed through ``__cause__``/``__context__`` and the wrapped exception that
    requests and urllib3 keep in ``args[0]`` / ``reason`` (requests' ``SSLError`` holds a
    ``MaxRetryError`` holding an ``SSLError`` holding the ``ssl.SSLCertVerificationError``)."""
    from forwarder.logs import redact

    inner, seen = exc, {id(exc)}
    while True:
        nxt = inner.__cause__ or inner.__context__ or getattr(inner, "reason", None)
        if not isinstance(nxt, BaseException) and inner.args and isinstance(inner.args[0], BaseException):
            nxt = inner.args[0]
        if not isinstance(nxt, BaseException) or id(nxt) in seen:
            break
        seen.add(id(nxt))
        inner = nxt
    message = " ".join(str(inner).split())  # one line
    text = redact(f"{type(inner).__name__}: {message}" if message else type(inner).__name__)
    if inner is not exc and type(exc).__name__ != type(inner).__name__:
        text = redact(f"{type(exc).__name__} caused by ") + text
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:(") + "…"


def certificate_thumbprint(pem: bytes) -> str:
    """SHA-1 thumbprint (hex, upper-case) of the first certificate in a PEM file."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(_first_certificate(pem.decode()).encode())
    from cryptography.hazmat.primitives import serialization

    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()  # noqa: S324


def _first_certificate(pem: str) -> str:
    begin = pem.find("-----BEGIN CERTIFICATE-----")
    end = pem.find("-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        raise FatalError("auth: no certificate found in the certificate file")
    return pem[begin : end + len("-----END CERTIFICATE-----")] + "\n"
