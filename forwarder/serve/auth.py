"""Authentication of inbound requests: an HMAC signature (the webhook scheme of
:mod:`forwarder.signing`) or a bearer token.

* A request carrying ``X-Dlpfwd-Signature`` or ``X-Dlpfwd-Timestamp`` is judged by its
  signature alone: HMAC-SHA256 over ``"<timestamp>." + body`` under ``hmac_secret`` (or
  ``hmac_previous_secret``), compared in constant time, and its timestamp must lie within the
  replay window (``[serve] replay_window``, 300 s either way).
* Otherwise ``Authorization: Bearer <token>`` is compared with ``bearer_token`` in constant
  time (over SHA-256 digests, so neither content nor length leaks through timing).
* Nothing else is accepted. Reasons (:class:`Unauthorized`) are safe to log and to answer:
  they never contain a secret, a signature or the body.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from forwarder.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, InvalidSignature, verify_signature


class Unauthorized(Exception):
    """The request is not authentic (401); ``reason`` is safe to log and to send back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Authenticator:
    """Checks one request's credentials; ``hmac_keys`` current key first, ``bearer_tokens`` any."""

    hmac_keys: Sequence[str]
    bearer_tokens: Sequence[str]
    replay_window: float = 300.0

    def methods(self) -> list[str]:
        """The accepted methods, for the 401 answer's ``WWW-Authenticate``-style hint."""
        return [m for m, on in (("hmac", bool(self.hmac_keys)), ("bearer", bool(self.bearer_tokens))) if on]

    def check(self, headers: Mapping[str, str], body: bytes, now: float) -> str:
        """Return the method that authenticated the request (``"hmac"`` or ``"bearer"``);
        raise :class:`Unauthorized` otherwise. ``headers`` have lower-case names."""
        timestamp = headers.get(TIMESTAMP_HEADER.lower())
        signature = headers.get(SIGNATURE_HEADER.lower())
        if timestamp is not None or signature is not None:
            if not self.hmac_keys:
                raise Unauthorized("signed requests are not accepted here (no hmac_secret configured)")
            try:
                verify_signature(body, timestamp, signature, list(self.hmac_keys), self.replay_window, now)
            except InvalidSignature as exc:
                raise Unauthorized(exc.reason) from None
            return "hmac"
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("expected 'Authorization: Bearer <token>'")
            if not self.bearer_tokens:
                raise Unauthorized("bearer tokens are not accepted here (no bearer_token configured)")
            offered = hashlib.sha256(token.strip().encode("utf-8")).digest()
            matched = False
            for expected in self.bearer_tokens:
                matched |= hmac.compare_digest(offered, hashlib.sha256(expected.encode("utf-8")).digest())
            if not matched:
                raise Unauthorized("bearer token does not match")
            return "bearer"
        raise Unauthorized(
            f"missing credentials: sign the request ({TIMESTAMP_HEADER}, {SIGNATURE_HEADER}) "
            "or send 'Authorization: Bearer <token>'"
        )
