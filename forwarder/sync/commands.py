"""``dlpfwd sync [--once] [--dry-run]``: the two-way status sync outside ``dlpfwd run``.

It takes the state directory like ``dlpfwd run`` (so it refuses to run beside it: ``run``
already syncs), builds the sync-enabled servicenow sink and the graph_security source's Graph
client, and runs passes every ``[sinks.sync] interval`` seconds (``--once``: one pass).
``--dry-run`` reads both sides and prints what would be written; it writes nothing anywhere
(not even the inbox or the cursor). Exit codes: 0 done, 1 something failed or was
dead-lettered, 2 configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from forwarder.errors import ConfigError, ForwarderError


def _out(text: str) -> None:
    from forwarder.logs import redact

    print(redact(text))


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.add_argument("--dry-run", action="store_true", help="print what would be written; write nothing")


def _summary(result: Any) -> str:
    counts = result.counts()
    return "sync: " + (", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "nothing to do")


def run_sync(args: argparse.Namespace, transport: Any = None) -> int:
    from forwarder.config import load_config
    from forwarder.runtime import Forwarder, install_signal_handlers
    from forwarder.sync.loop import SyncEngine

    config = load_config(args.config, args.host)
    fw = Forwarder(config, args.host)
    try:
        engine = SyncEngine.build(config, fw.store, fw.sinks, fw.metrics.plugin_counter_for("sync"), transport)
        if engine is None:
            raise ConfigError(["sinks: no servicenow sink has [sinks.sync] enabled = true"])
        try:
            if args.once or args.dry_run:
                result = engine.run_once(dry_run=args.dry_run)
                for line in result.planned:
                    _out(f"dry run: {line}")
                _out(_summary(result))
                return 1 if result.dead_lettered or result.deferred else 0
            stop = threading.Event()
            install_signal_handlers(stop, config.forwarder.shutdown_deadline)
            engine.run(stop)
            return 1 if engine.cursor_key in fw.store.stopped() else 0
        finally:
            engine.close()
    except ConfigError:
        raise
    except ForwarderError as exc:
        logging.getLogger("dlpfwd.sync").debug("sync failed", exc_info=True)
        print(f"dlpfwd sync: {exc}", file=sys.stderr)
        return 1
    finally:
        fw.close()


def _run(args: argparse.Namespace) -> int:
    return run_sync(args)


def register_sync(register: Callable[..., None]) -> None:
    """Register ``dlpfwd sync`` (called by the servicenow plugin, which the sync needs)."""
    register(
        "sync",
        "two-way status sync of ServiceNow tickets and Defender XDR incidents (--once, --dry-run)",
        _configure,
        _run,
    )
