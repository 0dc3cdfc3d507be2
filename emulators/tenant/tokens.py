"""Access tokens of the tenant emulator: RS256 JWTs shaped like Entra ID's v1 app tokens.

:class:`TokenIssuer` signs tokens with an RSA key kept in the emulator's state directory
(created once, so tokens and the JWKS survive restarts). :class:`TokenVerifier` checks a bearer
token against a JWKS (or one public key) for an audience; the other emulators (Logs
Ingestion...) reuse it::

    verifier = TokenVerifier(jwks)                     # dict from {base}/{tenant}/discovery/v2.0/keys
    claims = verifier.verify(token, "https://monitor.azure.com")   # raises TokenError

Claims follow real client-credentials tokens: ``aud`` (resource), ``iss``
(``https://sts.windows.net/{tid}/``), ``iat``/``nbf``/``exp``, ``tid``, ``appid``, ``appidacr``
("1" secret, "2" certificate), ``idtyp`` = ``app``, ``oid``, ``sub``, ``roles``, ``ver`` = ``1.0``.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

#: Audiences of the resources the emulator serves, by short name (also accepted: the app ids).
GRAPH = "https://graph.microsoft.com"
MANAGEMENT = "https://manage.office.com"
MONITOR = "https://monitor.azure.com"

#: Every resource URI the token endpoint knows (``<resource>/.default`` scopes), -> canonical audience.
RESOURCES: dict[str, str] = {
    "https://graph.microsoft.com": GRAPH,
    "https://graph.microsoft.us": GRAPH,
    "https://dod-graph.microsoft.us": GRAPH,
    "https://microsoftgraph.chinacloudapi.cn": GRAPH,
    "00000003-0000-0000-c000-000000000000": GRAPH,
    "https://manage.office.com": MANAGEMENT,
    "https://manage-gcc.office.com": MANAGEMENT,
    "https://manage.office365.us": MANAGEMENT,
    "https://manage.protection.apps.mil": MANAGEMENT,
    "c5393580-f805-4401-95e8-94b7a6ef2fc2": MANAGEMENT,
    "https://monitor.azure.com": MONITOR,
    "https://monitor.azure.us": MONITOR,
    "https://monitor.azure.cn": MONITOR,
}


class TokenError(Exception):
    """A bearer token was rejected. ``reason`` is one of ``missing``, ``malformed``,
    ``signature``, ``expired``, ``not_yet_valid``, ``audience``, ``issuer``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """The emulator's signing key at ``path`` (PEM, PKCS#8), generated on first use."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{path}: not an RSA private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return key


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """A stable ``kid``: base64url SHA-1 of the DER public key (Entra kids look like this)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()  # noqa: S324


def jwk_of(public_key: rsa.RSAPublicKey) -> dict[str, Any]:
    numbers = public_key.public_numbers()
    kid = key_id(public_key)
    return {
        "kty": "RSA",
        "use": "sig",
        "kid": kid,
        "x5t": kid,
        "n": _b64url_uint(numbers.n),
        "e": _b64url_uint(numbers.e),
    }


class TokenIssuer:
    """Signs access tokens for one tenant. ``now`` is the (emulated) clock in epoch seconds."""

    def __init__(self, key: rsa.RSAPrivateKey, tenant_id: str, now: Callable[[], float] = time.time) -> None:
        self.key = key
        self.tenant_id = tenant_id
        self.now = now
        self.kid = key_id(key.public_key())
        self.issuer = f"https://sts.windows.net/{tenant_id}/"

    def jwks(self) -> dict[str, Any]:
        """The JWKS document served at ``{base}/{tenant}/discovery/v2.0/keys``."""
        return {"keys": [jwk_of(self.key.public_key())]}

    def issue(
        self,
        audience: str,
        app_id: str,
        roles: Iterable[str],
        lifetime: float = 3599,
        app_name: str = "dlpfwd-emulator-app",
        certificate: bool = False,
    ) -> tuple[str, int]:
        """Return ``(token, expires_in)`` for ``app_id`` with ``roles`` on ``audience``."""
        now = int(self.now())
        expires_in = max(1, int(lifetime))
        oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.tenant_id}/{app_id}"))
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + expires_in,
            "aio": base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode(),
            "app_displayname": app_name,
            "appid": app_id,
            "appidacr": "2" if certificate else "1",
            "idp": self.issuer,
            "idtyp": "app",
            "oid": oid,
            "rh": "0.emulator.",
            "roles": sorted(set(roles)),
            "sub": oid,
            "tid": self.tenant_id,
            "uti": base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode(),
            "ver": "1.0",
        }
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid, "x5t": self.kid})
        return token, expires_in


class TokenVerifier:
    """Verifies emulator tokens: signature (RS256, key chosen by ``kid``), time, audience.

    ``keys`` is a JWKS dict (``{"keys": [...]}``), a single JWK dict, or an RSA public key.
    ``issuer``, when given, must equal the token's ``iss``. ``now`` supplies the (emulated)
    time; ``leeway`` seconds of clock skew are tolerated.
    """

    def __init__(
        self,
        keys: dict[str, Any] | rsa.RSAPublicKey,
        issuer: str | None = None,
        now: Callable[[], float] = time.time,
        leeway: float = 0.0,
    ) -> None:
        self._keys: dict[str, Any] = {}
        if isinstance(keys, rsa.RSAPublicKey):
            self._keys[key_id(keys)] = keys
        else:
            entries = keys.get("keys", [keys]) if isinstance(keys, dict) else []
            for entry in entries:
                public = jwt.algorithms.RSAAlgorithm.from_jwk(entry)
                self._keys[str(entry.get("kid", ""))] = public
        self.issuer = issuer
        self.now = now
        self.leeway = leeway

    def verify(self, token: str | None, audience: str | Iterable[str]) -> dict[str, Any]:
        """The token's claims if it is valid for ``audience`` (one or several accepted values)."""
        if not token:
            raise TokenError("missing", "Access token is empty.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed", "IDX14100: JWT is not well formed.") from None
        key = self._keys.get(str(header.get("kid", ""))) or (
            next(iter(self._keys.values())) if len(self._keys) == 1 else None
        )
        if key is None or header.get("alg") != "RS256":
            raise TokenError("signature", "Access token validation failure: signature key not found.")
        # time claims are checked below against ``now`` (the emulated clock), not by PyJWT
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
            )
        except jwt.PyJWTError:
            raise TokenError("signature", "Access token validation failure: invalid signature.") from None
        now = self.now()
        if float(claims.get("exp", 0)) + self.leeway <= now:
            raise TokenError("expired", "Lifetime validation failed, the token is expired.")
        if float(claims.get("nbf", 0)) - self.leeway > now:
            raise TokenError("not_yet_valid", "Lifetime validation failed, the token is not yet valid.")
        accepted = {audience} if isinstance(audience, str) else set(audience)
        if str(claims.get("aud", "")).rstrip("/") not in {a.rstrip("/") for a in accepted}:
            raise TokenError("audience", "Invalid audience.")
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise TokenError("issuer", "Invalid issuer.")
        return claims


def bearer(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else ``None``."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
