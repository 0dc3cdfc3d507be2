"""Request signing shared by the ``webhook`` sink (sender) and ``dlpfwd serve`` (receiver):
HMAC-SHA256 over ``"<timestamp>.<body>"``.

The sender adds two headers::

    X-Dlpfwd-Timestamp: 1763892000              (Unix seconds when the request was signed)
    X-Dlpfwd-Signature: sha256=<64 hex digits>  (HMAC-SHA256(secret, b"1763892000." + body))

A receiver recomputes the HMAC over the exact bytes it received, compares in constant time and
refuses a timestamp outside its tolerance (default 300 s either way), which bounds replays.
:func:`verify_signature` does all of that; receivers (and ``dlpfwd serve``) reuse it. The
signature header may carry several comma-separated ``sha256=`` values and the verifier may be
given several keys, so a secret can be rotated without a window of refusals.

It lives in the core so that ``forwarder/`` never imports ``sinks/``; ``sinks.webhook.signing``
re-exports it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

TIMESTAMP_HEADER = "X-Dlpfwd-Timestamp"
SIGNATURE_HEADER = "X-Dlpfwd-Signature"
SCHEME = "sha256="
DEFAULT_TOLERANCE = 300.0


class InvalidSignature(ValueError):
    """The request is not authentic or too old; ``reason`` is safe to log (no secrets, no body).
    A receiver answers it with 401 and changes nothing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _key_bytes(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.encode("utf-8")


def compute(body: bytes, timestamp: str, key: str | bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``key``."""
    return hmac.new(_key_bytes(key), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def sign(body: bytes, key: str | bytes, now: float | None = None) -> dict[str, str]:
    """The two headers that sign ``body`` at ``now`` (default: the current time)."""
    timestamp = str(int(now if now is not None else time.time()))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: SCHEME + compute(body, timestamp, key)}


def verify_signature(
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    key: str | bytes | Sequence[str | bytes],
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a signed request; return nothing when it is authentic and fresh.

    ``body`` are the raw bytes received (before any JSON parsing), ``timestamp`` and
    ``signature`` the header values (``None`` when absent), ``key`` one secret or several
    (rotation). Raises :class:`InvalidSignature` when a header is missing or malformed, the
    timestamp is more than ``tolerance`` seconds away from ``now``, or no signature matches.
    """
    if not timestamp:
        raise InvalidSignature(f"missing {TIMESTAMP_HEADER} header")
    if not signature:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    stamp = timestamp.strip()
    if not stamp.isdigit() or len(stamp) > 12:
        raise InvalidSignature(f"{TIMESTAMP_HEADER} is not Unix seconds")
    current = now if now is not None else time.time()
    age = current - int(stamp)
    if abs(age) > tolerance:
        when = "old" if age > 0 else "in the future"
        raise InvalidSignature(f"timestamp is {abs(int(age))} s {when} (tolerance {int(tolerance)} s)")
    offered = [part.strip() for part in signature.split(",") if part.strip()]
    digests = [part[len(SCHEME) :] for part in offered if part.startswith(SCHEME)]
    if not digests:
        raise InvalidSignature(f"{SIGNATURE_HEADER} has no {SCHEME} value")
    keys: Sequence[str | bytes] = [key] if isinstance(key, str | bytes) else key
    if not keys:
        raise InvalidSignature("no verification key configured")
    for k in keys:
        expected = compute(body, stamp, k)
        for digest in digests:
            if hmac.compare_digest(expected, digest.lower()):
                return
    raise InvalidSignature("signature does not match")
