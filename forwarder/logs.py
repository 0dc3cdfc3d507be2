"""Logging for dlpfwd, with secret redaction on every record.

Every log record's message is redacted (a record factory installed by :func:`setup_logging`
and by the first :func:`register_secret`), whatever handler prints it; the stderr handler
of :func:`setup_logging` also redacts tracebacks (:class:`RedactingFilter`). Redacted: every
secret value registered with :func:`register_secret` (the loader registers every
:class:`~forwarder.settings.Secret` of a loaded configuration) and anything shaped like
a bearer token, an ``Authorization`` header, a ``client_secret=`` /
``sig=`` / ``access_token=`` parameter or a Splunk ``Splunk <token>`` header becomes ``***``.
:func:`redact` applies the same rules to any text the CLI prints.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any

from forwarder.settings import REDACTED, Secret

_lock = threading.Lock()
_secrets: set[str] = set()
_secret_pattern: re.Pattern[str] | None = None

# Credentials that may appear in text even when they are not configured secrets.
_PATTERNS = [
    (
        re.compile(r"(?i)\b(authorization\s*[:=]\s*)(?:bearer|basic|splunk|sharedaccesssignature)?\s*[^\s,;'\"]+"),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer|splunk)\s+[A-Za-z0-9\-._~+/]{8,}=*"), r"\1 " + REDACTED),
    (
        re.compile(
            # Not after a "." : "sinks[0].token: expected ..." is a configuration key path and its problem.
            r"(?i)(?<!\.)\b(client_secret|access_token|refresh_token|id_token|client_assertion|password|sig|token)"
            r"(\s*[=:]\s*)[^\s&,;'\"]+"
        ),
        r"\1\2" + REDACTED,
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), REDACTED),  # JWTs
    (
        re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@'\"]+:[^/\s@'\"]+@"),
        r"\1" + REDACTED + "@",
    ),  # URL user:password@
]

#: Secrets shorter than this are not redacted by value (they would blank ordinary words).
MIN_SECRET_LENGTH = 4


def register_secret(value: str | Secret | None) -> None:
    """Redact ``value`` from every log message and every :func:`redact` call from now on."""
    global _secret_pattern
    if isinstance(value, Secret):
        value = value.reveal()
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    install_record_factory()
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def register_secrets_in(obj: Any) -> int:
    """Register every :class:`Secret` found in ``obj`` (dataclasses, dicts, lists); returns how many."""
    found = 0
    seen: set[int] = set()

    def walk(value: Any) -> None:
        nonlocal found
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, Secret):
            register_secret(value)
            found += 1
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)
        elif hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
            for name in value.__dataclass_fields__:
                walk(getattr(value, name, None))

    walk(obj)
    return found


def redact(text: str) -> str:
    """``text`` with every registered secret and credential-shaped substring replaced by ``***``."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


class _RedactedRecord(logging.LogRecord):
    """A log record whose message is redacted for every handler, ours or not (pytest's, syslog...)."""

    def getMessage(self) -> str:  # noqa: N802 - logging's name
        return redact(super().getMessage())


_factory_installed = False


def install_record_factory() -> None:
    """Make every log record created from now on redact its message (idempotent)."""
    global _factory_installed
    if _factory_installed:
        return
    _factory_installed = True
    previous = logging.getLogRecordFactory()
    if previous is logging.LogRecord:
        logging.setLogRecordFactory(_RedactedRecord)
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        original = record.getMessage
        record.getMessage = lambda: redact(original())  # type: ignore[method-assign]
        return record

    logging.setLogRecordFactory(factory)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (arguments merged) and exception text through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not lose the record
            message = str(record.msg)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup_logging(level: str = "info", stream: Any = None) -> logging.Handler:
    """Send ``dlpfwd.*`` and library logs to stderr (or ``stream``) through the redacting filter.

    Idempotent: a second call replaces the handler installed by the first.
    """
    install_record_factory()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_dlpfwd", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._dlpfwd = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))
    # Libraries that log request details (headers) at debug level stay at warning.
    for noisy in ("httpx", "httpcore", "msal", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler
