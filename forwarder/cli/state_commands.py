"""CLI commands over the state store: ``state``, ``dead-letters``, ``report``, ``health``.

They read the state directory of the configuration (``--state-dir`` overrides it, so they
also work without a valid configuration, e.g. on a copy of a state directory). They can run
while ``dlpfwd run`` is running (SQLite WAL: readers never block the writer).

Exit codes: 0 ok; 1 ``report`` found the data incomplete / ``health`` found a source or sink
silent for longer than expected or stopped by a fatal error; 2 usage error (unknown sink, no state directory).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import sys
import time
import tomllib
from collections.abc import Callable
from typing import Any

import orjson

from forwarder.hookspecs import hookimpl
from forwarder.logs import redact
from forwarder.schema import iso_utc
from forwarder.state.sqlite import DB_NAME, SqliteStateStore

EXIT_OK, EXIT_BAD, EXIT_USAGE = 0, 1, 2


def _out(text: str = "") -> None:
    print(redact(text))


def _err(text: str) -> None:
    print(redact(text), file=sys.stderr)


def _state_dir(args: argparse.Namespace) -> str:
    if getattr(args, "state_dir", None):
        return str(args.state_dir)
    return state_dir_of(args.config)


def state_dir_of(path: str) -> str:
    """The ``[forwarder] state_dir`` of the configuration at ``path``, validating only the
    ``[forwarder]`` table: these read-only commands run without the service's environment, so
    secret references (``${ENV}``, ``file:``) elsewhere are neither resolved nor required, and
    no secret value is ever read. Raises :class:`ConfigError` with the key path on a problem."""
    from forwarder.config import ForwarderSettings
    from forwarder.errors import ConfigError
    from forwarder.settings import build

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        problem = f"{path}: configuration file not found (use --config, $DLPFWD_CONFIG or --state-dir)"
        raise ConfigError([problem]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read configuration: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    problems: list[str] = []
    settings = build(ForwarderSettings, data.get("forwarder", {}), "forwarder", problems)
    if problems or settings is None:
        raise ConfigError(problems)
    return str(settings.state_dir)


def _open(args: argparse.Namespace) -> SqliteStateStore | None:
    state_dir = _state_dir(args)
    if not os.path.exists(os.path.join(state_dir, DB_NAME)):
        _err(f"dlpfwd {args._command.name}: no state in {state_dir} (has dlpfwd run been started?)")
        return None
    return SqliteStateStore(state_dir)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", metavar="DIR", help="state directory (default: the configuration's)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _when(ts: float | None) -> str:
    return iso_utc(dt.datetime.fromtimestamp(ts, dt.UTC)) if ts else "never"


def _json(data: Any) -> None:
    sys.stdout.write(redact(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()) + "\n")


# --------------------------------------------------------------------------- state


def state_summary(store: SqliteStateStore, now: float | None = None) -> dict[str, Any]:
    """Spools, dead letters, quarantine, duplicates and heartbeats, as plain data."""
    now = time.time() if now is None else now
    totals = store.totals()
    dead = store.dead_letter_counts()
    quarantined = store.quarantine_counts()
    beats = {b["name"]: b for b in store.heartbeats()}
    stopped = store.stopped()
    sinks = {}
    for name in store.sinks():
        events, size = store.spool_depth(name)
        oldest = store.spool_oldest(name) if events else None
        sinks[name] = {
            "spool_events": events,
            "spool_bytes": size,
            "oldest_age_seconds": round(now - oldest, 1) if oldest else 0,
            "dead_letters": dead.get(name, 0),
            "last_delivery": _when(beats.get(name, {}).get("last_ok")),
            "stopped": _stopped(stopped.get(name)),
            **{k: v for k, v in totals.get(name, {}).items()},
        }
    sources = {}
    for b in store.heartbeats():
        if b["role"] != "source":
            continue
        name = b["name"]
        sources[name] = {
            "cursor": store.get_cursor(f"source:{name}"),
            "last_poll": _when(b["last_ok"]),
            "quarantined_now": quarantined.get(name, 0),
            "stopped": _stopped(stopped.get(name)),
            **{k: v for k, v in totals.get(name, {}).items()},
        }
    for name, info in stopped.items():  # stopped before its first heartbeat (connect failed)
        if info.get("role") == "source" and name not in sources:
            sources[name] = {"cursor": None, "last_poll": "never", "quarantined_now": 0, "stopped": _stopped(info)}
    return {"sinks": sinks, "sources": sources}


def _stopped(info: dict[str, Any] | None) -> dict[str, str] | None:
    if not info:
        return None
    return {"reason": redact(str(info.get("reason", ""))), "since": _when(info.get("time"))}


def _state(args: argparse.Namespace) -> int:
    store = _open(args)
    if store is None:
        return EXIT_USAGE
    try:
        summary = state_summary(store)
        from forwarder.sync.inbox import summary as sync_summary

        sync = sync_summary(store)  # None unless the two-way status sync ever ran
    finally:
        store.close()
    if sync is not None:
        summary["sync"] = sync
    from forwarder.correlation.index import index_stats  # its own file; present when [correlation] is on

    correlation = index_stats(_state_dir(args))
    if correlation is not None:
        summary["correlation"] = correlation
    from forwarder.correlation.writeback import writeback_summary

    writeback = writeback_summary(_state_dir(args))
    if writeback is not None:
        summary["writeback"] = writeback
    if args.json:
        _json(summary)
        return EXIT_OK
    for name, s in summary["sources"].items():
        _out(
            f"source {name}: last poll {s['last_poll']}; read {s.get('read', 0)}, spooled {s.get('spooled', 0)}, "
            f"duplicates dropped {s.get('duplicates', 0)}, quarantined {s.get('quarantined', 0)} "
            f"({s['quarantined_now']} kept)"
            + (
                f", non-DLP alerts indexed for correlation only (not forwarded) {s['correlation_only']}"
                if s.get("correlation_only")
                else ""
            )
        )
        if s.get("stopped"):
            _out(f"  STOPPED since {s['stopped']['since']}: {s['stopped']['reason']}")
    for name, s in summary["sinks"].items():
        _out(
            f"sink {name}: spool {s['spool_events']} event(s) / {s['spool_bytes']} bytes, oldest "
            f"{s['oldest_age_seconds']} s; delivered {s.get('delivered', 0)}, dead letters {s['dead_letters']}, "
            f"dropped (spool full) {s.get('dropped_oldest', 0)}; last delivery {s['last_delivery']}"
        )
        if s.get("stopped"):
            _out(f"  STOPPED since {s['stopped']['since']}: {s['stopped']['reason']}")
    if correlation is not None:
        c = correlation
        _out(
            f"correlation index: {c['items']} event(s), {c['links']} link(s), {c['bytes']} bytes; "
            f"expired {c['expired']}, evicted (size bound) {c['evicted']}, links evicted {c['links_evicted']}"
        )
    if sync is not None:
        from forwarder.sync.inbox import render

        _out(render(sync))
    if writeback is not None:
        w = writeback
        _out(
            f"write-back: {w['written']} alert(s) commented ({w['comments']} comment(s)), {w['deferred_now']} "
            f"waiting for a retry, {w['dead']} dead-lettered; {render_writeback(w)}"
        )
    return EXIT_OK


def render_writeback(w: dict[str, Any]) -> str:
    """The write-back outcomes of ``writeback_summary`` (for ``state``: the last 31 days; for
    ``report``: the period) in words."""
    o = w["outcomes"]
    return (
        f"{o['commented']} comment(s) posted, {o['recovered']} found already written (after a crash), "
        f"{o['tagged']} incident(s) tagged, {o['deferred']} deferral(s), {o['dead_lettered']} dead-lettered; "
        f"last write-back {_when(w['last'])}"
    )


# --------------------------------------------------------------------------- dead letters


def _dead_letters_configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "replay", "purge"), help="what to do")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--sink", metavar="NAME", help="a sink's dead letters")
    target.add_argument(
        "--source", metavar="NAME", help="a source's quarantined records (replay normalizes them again)"
    )
    parser.add_argument("--id", type=int, action="append", dest="ids", metavar="N", help="only this entry (repeatable)")
    parser.add_argument("--limit", type=int, default=50, help="entries to list (default 50)")
    parser.add_argument(
        "--payload",
        "--show-raw",
        action="store_true",
        help="list: also print each entry's payload / quarantined bytes (unparseable records are kept as received)",
    )
    _common(parser)


def _dead_letters(args: argparse.Namespace) -> int:
    store = _open(args)
    if store is None:
        return EXIT_USAGE
    try:
        if args.source:
            return _quarantine(store, args)
        if args.sink not in store.sinks():
            _err(f"dlpfwd dead-letters: no sink named {args.sink!r} in the state (known: {', '.join(store.sinks())})")
            return EXIT_USAGE
        if args.action == "replay":
            n = store.replay_dead_letters(args.sink, args.ids)
            _out(f"replayed {n} dead letter(s) into the spool of sink {args.sink}")
            return EXIT_OK
        if args.action == "purge":
            n = store.purge_dead_letters(args.sink, args.ids)
            _out(f"purged {n} dead letter(s) of sink {args.sink}")
            return EXIT_OK
        rows = store.dead_letters(args.sink, limit=args.limit)
        if args.ids:
            rows = [r for r in rows if r.id in set(args.ids)]
        listing = []
        for r in rows:
            try:
                event_id = orjson.loads(r.payload).get("id", "")
            except orjson.JSONDecodeError:
                event_id = "?"
            item = {"id": r.id, "time": _when(r.time), "event": event_id, "attempts": r.attempts, "reason": r.reason}
            if args.payload:
                item["payload"] = r.payload.decode("utf-8", "replace")
            listing.append(item)
        total = store.dead_letter_counts().get(args.sink, 0)
        if args.json:
            _json({"sink": args.sink, "total": total, "entries": listing})
            return EXIT_OK
        _out(f"sink {args.sink}: {total} dead letter(s)")
        for item in listing:
            _out(f"  #{item['id']} {item['time']} event {item['event']}: {item['reason']}")
            if args.payload:
                _out(f"    {item['payload']}")
        return EXIT_OK
    finally:
        store.close()


def _quarantine(store: SqliteStateStore, args: argparse.Namespace) -> int:
    if args.action == "replay":
        return _replay_quarantine(args)
    if args.action == "purge":
        n = store.purge_quarantine(args.source, args.ids)
        _out(f"purged {n} quarantined record(s) of source {args.source}")
        return EXIT_OK
    rows = store.quarantined(args.source, limit=args.limit)
    if args.ids:
        rows = [r for r in rows if r.id in set(args.ids)]
    listing = [
        {
            "id": r.id,
            "time": _when(r.time),
            "kind": r.kind,
            "reason": r.reason,
            "size": len(r.raw),
            "sha256": hashlib.sha256(r.raw).hexdigest(),
            **({"raw": r.raw.decode("utf-8", "replace")} if args.payload else {}),
        }
        for r in rows
    ]
    if args.json:
        _json({"source": args.source, "entries": listing})
        return EXIT_OK
    _out(f"source {args.source}: {store.quarantine_counts().get(args.source, 0)} quarantined record(s)")
    for item in listing:
        _out(
            f"  #{item['id']} {item['time']} kind {item['kind']}, {item['size']} bytes, "
            f"sha256 {str(item['sha256'])[:16]}: {item['reason']}"
        )
        if args.payload:
            _out(f"    {item['raw']}")
    return EXIT_OK


def _replay_quarantine(args: argparse.Namespace) -> int:
    """Normalize quarantined records again (needs the configuration: the source and its
    normalizers) and spool what passes now."""
    from forwarder.config import load_config
    from forwarder.runtime import Forwarder, StateDirBusy

    config = load_config(args.config, args.host)
    if args.state_dir:
        config.forwarder.state_dir = args.state_dir
    try:
        fw = Forwarder(config, args.host)
    except StateDirBusy as exc:
        _err(f"dlpfwd dead-letters replay: {exc}; stop it first (quarantine replay runs the normalizers here)")
        return EXIT_USAGE
    try:
        counts = fw.replay_quarantine(args.source, args.ids)
        result = fw.deliver() if counts.spooled else None
    finally:
        fw.close()
    _out(
        f"source {args.source}: {counts.read} quarantined record(s) replayed: {counts.spooled} spooled, "
        f"{counts.duplicates} duplicate(s), {counts.quarantined} still failing (quarantined again)"
    )
    if result is not None and not result.ok:
        _err(result.summary())
        return EXIT_BAD
    return EXIT_OK


# --------------------------------------------------------------------------- report


def _parse_since(text: str) -> dt.datetime:
    from forwarder.cli.core_commands import parse_when

    return parse_when(text)


def _report_configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", required=True, type=_parse_since, metavar="T", help="ISO 8601 time or 7d/12h/30m")
    parser.add_argument(
        "--warn-within", type=float, default=24.0, metavar="HOURS", help="warn about work expiring within (24)"
    )
    _common(parser)


def _report(args: argparse.Namespace) -> int:
    from forwarder.report import build_report, render_text

    store = _open(args)
    if store is None:
        return EXIT_USAGE
    try:
        since = args.since.timestamp()
        report = build_report(store.ledger(since), since, warn_within=args.warn_within * 3600)
    finally:
        store.close()
    from forwarder.correlation.writeback import writeback_summary

    writeback = writeback_summary(_state_dir(args), since)
    if args.json:
        _json({**report.as_dict(), **({"writeback": writeback} if writeback is not None else {})})
    else:
        _out(render_text(report))
        if writeback is not None:
            _out(f"write-back since {_when(since)}: {render_writeback(writeback)}")
    return EXIT_OK if report.complete else EXIT_BAD


# --------------------------------------------------------------------------- health


def health_problems(store: SqliteStateStore, now: float | None = None) -> list[str]:
    """Sources that have not polled and sinks that have not delivered (with a backlog) within
    their expected interval: the "silently stopped" alarm; and every source or sink stopped by
    a fatal error (until it polls / delivers successfully again)."""
    now = time.time() if now is None else now
    problems = []
    for name, info in store.stopped().items():
        problems.append(
            f"{info.get('role', 'instance')} {name}: stopped since {_when(info.get('time'))}: "
            f"{redact(str(info.get('reason', '')))}"
        )
    for b in store.heartbeats():
        expect, last, name = b["expect"], b["last_ok"], b["name"]
        if not expect:
            continue
        age = now - last if last else None
        if age is None and b.get("registered") and now - b["registered"] <= expect:
            continue  # configured recently: not yet expected to have polled or delivered
        if b["role"] == "source":
            if age is None or age > expect:
                problems.append(f"source {name}: no successful poll for {_age(age)} (expected within {expect:.0f} s)")
        elif b["role"] == "writeback":
            if age is None or age > expect:
                problems.append(f"{name}: no write-back drain for {_age(age)} (expected within {expect:.0f} s)")
        elif b["role"] == "sink":
            backlog = store.spool_depth(name)[0] if name in store.sinks() else 0
            if backlog and (age is None or age > expect):
                problems.append(
                    f"sink {name}: {backlog} event(s) waiting, no delivery for {_age(age)} "
                    f"(expected within {expect:.0f} s)"
                )
    return problems


def _age(age: float | None) -> str:
    return "ever" if age is None else f"{age:.0f} s"


def _health(args: argparse.Namespace) -> int:
    store = _open(args)
    if store is None:
        return EXIT_USAGE
    try:
        problems = health_problems(store)
        beats = store.heartbeats()
    finally:
        store.close()
    if args.json:
        _json({"ok": not problems, "problems": problems, "heartbeats": beats})
    else:
        for b in beats:
            _out(f"{b['role']} {b['name']}: last success {_when(b['last_ok'])}")
        for p in problems:
            _err(f"UNHEALTHY: {p}")
        if not problems:
            _out("healthy")
    return EXIT_BAD if problems else EXIT_OK


def _noop(parser: argparse.ArgumentParser) -> None:
    _common(parser)


@hookimpl
def dlpfwd_register_commands(register: Callable[..., None]) -> None:
    register("state", "show spools, dead letters, duplicates and last poll/delivery times", _noop, _state)
    register(
        "dead-letters",
        "list, replay or purge a sink's dead letters (--sink) or a source's quarantine (--source)",
        _dead_letters_configure,
        _dead_letters,
    )
    register("report", "completeness report: what was listed, delivered, pending or lost", _report_configure, _report)
    register(
        "health", "exit 1 if a source or sink stopped, has not polled or has not delivered in time", _noop, _health
    )
