"""Durable state of one forwarder: cursors, per-sink spools, dead letters, quarantine,
deduplication keys, the completeness ledger, health heartbeats and plugin key-value state.

:class:`StateStore` is the small interface the runtime and the CLI use;
:class:`SqliteStateStore` (SQLite in WAL mode under ``[forwarder] state_dir``) is the embedded
default. A shared store (e.g. PostgreSQL for an active/passive pair) can implement the same
protocol later.
"""

from forwarder.state.base import (
    DeadLetter,
    KeyValue,
    LedgerRow,
    Quarantined,
    SpoolRow,
    StateStore,
    Transaction,
)
from forwarder.state.sqlite import SqliteStateStore, open_store

__all__ = [
    "DeadLetter",
    "KeyValue",
    "LedgerRow",
    "Quarantined",
    "SpoolRow",
    "SqliteStateStore",
    "StateStore",
    "Transaction",
    "open_store",
]
