"""Webhook request signing: HMAC-SHA256 over ``"<timestamp>.<body>"``.

The code lives in :mod:`forwarder.signing` (``dlpfwd serve`` verifies the same scheme and the
core does not import sinks/); this module re-exports it for the sink and for receivers that
import ``sinks.webhook.signing``.
"""

from __future__ import annotations

from forwarder.signing import (
    DEFAULT_TOLERANCE,
    SCHEME,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    InvalidSignature,
    compute,
    sign,
    verify_signature,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "SCHEME",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "InvalidSignature",
    "compute",
    "sign",
    "verify_signature",
]
