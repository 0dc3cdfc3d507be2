"""One error hierarchy for dlpfwd; library exceptions are translated at the boundary."""

from __future__ import annotations


class ForwarderError(Exception):
    """Base of every error dlpfwd raises on purpose."""


class ConfigError(ForwarderError):
    """The configuration is invalid; ``problems`` lists every ``key.path: expected ...`` message."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems) if self.problems else "invalid configuration")


class PluginLoadError(ForwarderError):
    """A plugin could not be imported, or broke its contract at registration."""


class RetriableError(ForwarderError):
    """A transient failure: try again later, after ``retry_after`` seconds if the peer said so."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(ForwarderError):
    """A failure that retrying cannot fix (bad credentials, missing permission, wrong index...)."""


class NotConnected(RetriableError):
    """The plugin lost its connection; the host reconnects with back-off before the next call."""


class MalformedRecord(ForwarderError):
    """A source record cannot be normalized; it is quarantined with its raw bytes and ``reason``."""

    def __init__(self, reason: str, raw: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class NotSupported(ForwarderError):
    """The plugin does not offer the requested operation (e.g. a backfill range it cannot serve)."""
