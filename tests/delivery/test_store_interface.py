"""The runtime, pipeline and drainers use the state store only through the ``StateStore``
interface (so a shared store can be added later), and the SQLite store implements all of it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import forwarder
from forwarder.state.base import StateStore, Transaction
from forwarder.state.sqlite import SqliteStateStore, _SqliteTransaction

ROOT = Path(forwarder.__file__).parent
USERS = ["runtime.py", "pipeline.py", "delivery.py"]


def members(protocol: type) -> set[str]:
    return {n for n, v in vars(protocol).items() if not n.startswith("_") and callable(v)}


def test_every_store_call_of_the_runtime_is_part_of_the_interface() -> None:
    used: set[str] = set()
    for name in USERS:
        used |= set(re.findall(r"\bstore\.([a-z_]+)\(", (ROOT / name).read_text()))
    assert {"refresh_depths", "spool_depth", "transaction", "read_spool", "settle"} <= used
    assert used <= members(StateStore), f"not in StateStore: {sorted(used - members(StateStore))}"


def test_the_sqlite_store_implements_the_interface_with_the_same_signatures() -> None:
    for protocol, impl in ((StateStore, SqliteStateStore), (Transaction, _SqliteTransaction)):
        for name in members(protocol):
            assert hasattr(impl, name), f"{impl.__name__} lacks {name}"
            want = list(inspect.signature(getattr(protocol, name)).parameters)
            have = list(inspect.signature(getattr(impl, name)).parameters)
            assert have[: len(want)] == want, f"{impl.__name__}.{name}{have} != {want}"
