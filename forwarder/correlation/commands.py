"""``dlpfwd incidents list|show|update`` and ``dlpfwd correlation`` (index size and links).

``incidents`` talks to Microsoft Graph with the app of a configured ``graph_security`` source
(``--source``; default: the only one). ``update`` validates every enum before any call, reads
the incident, PATCHes only what changes (tags keep the current ones), adds the comment, and
prints each changed field as ``before -> after``. ``--dry-run`` prints the PATCH body and
calls nothing but the read. Exit codes: 0 done, 1 the service refused or failed (the
message names the missing permission on 401/403), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

import orjson

from forwarder.errors import ConfigError, ForwarderError
from forwarder.hookspecs import hookimpl

log = logging.getLogger("dlpfwd.incidents")


def _out(text: str = "") -> None:
    from forwarder.logs import redact

    print(redact(text))


def _err(text: str) -> None:
    from forwarder.logs import redact

    print(redact(text), file=sys.stderr)


def _graph_source(args: argparse.Namespace) -> Any:
    from forwarder.config import load_config

    config = load_config(args.config, args.host)
    sources = [s for s in config.sources if s.type == "graph_security"]
    if args.source:
        sources = [s for s in sources if s.name == args.source]
        if not sources:
            raise ConfigError([f"--source: no graph_security source named {args.source!r} in {args.config}"])
    if not sources:
        raise ConfigError([f"{args.config}: no graph_security source configured (its app is the one used)"])
    if len(sources) > 1:
        names = ", ".join(s.name for s in sources)
        raise ConfigError([f"--source: several graph_security sources ({names}); name one"])
    return sources[0].settings


def _incidents_configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="the graph_security source whose app is used (default: the only one)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    sub = parser.add_subparsers(dest="action", required=True, metavar="list|show|update")
    ls = sub.add_parser("list", help="the most recently updated incidents")
    ls.add_argument("--status", help="only incidents with this status (active, inProgress, resolved, redirected)")
    ls.add_argument("--top", type=int, default=20, help="how many (at most 50)")
    show = sub.add_parser("show", help="one incident")
    show.add_argument("id")
    up = sub.add_parser("update", help="change status, classification, determination, assignment, tags; comment")
    up.add_argument("id")
    up.add_argument("--status", default="", help="active | inProgress | resolved | redirected")
    up.add_argument("--classification", default="", help="truePositive | falsePositive | informationalExpectedActivity")
    up.add_argument("--determination", default="", help="e.g. maliciousUserActivity, notMalicious, other")
    up.add_argument("--assigned-to", dest="assigned_to", default=None, help="UPN or name ('' to unassign)")
    up.add_argument("--tag", action="append", default=[], help="add a custom tag (repeatable; existing tags kept)")
    up.add_argument("--untag", action="append", default=[], help="remove a custom tag (repeatable)")
    up.add_argument("--comment", default="", help="add this comment")
    up.add_argument("--dry-run", action="store_true", help="show what would be written; write nothing")


def _line(incident: dict[str, Any]) -> str:
    tags = ",".join(incident.get("customTags") or [])
    return (
        f"{incident.get('id', '')}\t{incident.get('status', '')}\t{incident.get('severity', '')}\t"
        f"{incident.get('classification') or '-'}\t{incident.get('assignedTo') or '-'}\t"
        f"{incident.get('lastUpdateDateTime', '')}\t{incident.get('displayName', '')}" + (f"\t[{tags}]" if tags else "")
    )


def _show(incident: dict[str, Any]) -> None:
    for key in ("id", "displayName", "status", "severity", "classification", "determination", "assignedTo",
                "customTags", "createdDateTime", "lastUpdateDateTime", "incidentWebUrl"):  # fmt: skip
        value = incident.get(key)
        _out(f"{key}: {', '.join(value) if isinstance(value, list) else ('' if value is None else value)}")
    for c in incident.get("comments") or []:
        if isinstance(c, dict):
            who = c.get("createdByDisplayName") or c.get("createdBy") or ""
            when = c.get("createdDateTime") or c.get("createdTime") or ""
            _out(f"comment ({who}, {when}): {c.get('comment', '')}")


def _incidents(args: argparse.Namespace, transport: Any = None) -> int:
    from forwarder.correlation.incidents import STATUSES, IncidentsApi, IncidentUpdate, canonical, changes

    update: IncidentUpdate | None = None
    if args.action == "update":
        update = IncidentUpdate(
            status=args.status,
            classification=args.classification,
            determination=args.determination,
            assigned_to=args.assigned_to,
            add_tags=args.tag,
            remove_tags=args.untag,
            comment=args.comment,
        ).validated()  # before any call
    status = canonical(args.status, STATUSES, "--status") if args.action == "list" and args.status else ""
    settings = _graph_source(args)
    api = IncidentsApi(settings, log, transport=transport)
    try:
        if args.action == "list":
            found = api.incidents(status=status, top=max(1, min(50, args.top)))
            if args.json:
                _out(orjson.dumps(found).decode())
            else:
                for incident in found:
                    _out(_line(incident))
            return 0
        before = api.get(args.id)
        if args.action == "show":
            _out(orjson.dumps(before).decode()) if args.json else _show(before)
            return 0
        assert update is not None
        body = update.body(before)
        if args.dry_run:
            _out(f"dry run: PATCH security/incidents/{args.id} {orjson.dumps(body).decode() if body else '(nothing)'}")
            if update.comment:
                _out(f"dry run: POST security/incidents/{args.id}/comments {update.comment!r}")
            return 0
        after = api.update(args.id, body) if body else before
        comments = api.comment(args.id, update.comment) if update.comment else []
        diff = changes(before, after)
        if args.json:
            _out(orjson.dumps({"before": before, "after": after, "changed": [d[0] for d in diff]}).decode())
        else:
            if not diff and not update.comment:
                _out(f"incident {args.id}: nothing to change")
            for name, old, new in diff:
                _out(f"{name}: {old!r} -> {new!r}")
            if update.comment:
                _out(f"comment added ({len(comments)} comment(s) on the incident)")
        return 0
    finally:
        api.close()


def _run_incidents(args: argparse.Namespace) -> int:
    try:
        return _incidents(args)
    except ConfigError:
        raise  # exit 2, printed by dlpfwd's main
    except ForwarderError as exc:
        _err(f"dlpfwd incidents: {exc}")
        return 1


def _correlation_configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", help="state directory (default: the configuration's)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _correlation(args: argparse.Namespace) -> int:
    from forwarder.correlation.index import index_stats

    state_dir = args.state_dir
    if not state_dir:
        from forwarder.config import load_config

        state_dir = load_config(args.config, args.host).forwarder.state_dir
    stats = index_stats(state_dir)
    if stats is None:
        _err(f"dlpfwd correlation: no correlation index in {state_dir} ([correlation] enabled = true?)")
        return 1
    if args.json:
        _out(orjson.dumps(stats).decode())
    else:
        _out(
            f"correlation index: {stats['items']} events, {stats['links']} links, "
            f"{stats['bytes'] / 1e6:.1f} MB; expired {stats['expired']}, evicted {stats['evicted']}, "
            f"links evicted {stats['links_evicted']}"
        )
    return 0


def _writeback_configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="print the comments and tags that would be written")
    parser.add_argument("--limit", type=int, default=100, help="most alerts written in this run")


def _writeback(args: argparse.Namespace, transport: Any = None) -> int:
    from forwarder.config import load_config
    from forwarder.correlation.writeback import GraphWriter, WriteBack, drain_lock

    config = load_config(args.config, args.host)
    corr = config.correlation
    if corr is None or not corr.enabled or not corr.writeback_sources:
        raise ConfigError(["correlation.writeback_sources: name the graph_security sources to write back through"])
    known = {s.name: s for s in config.sources if s.type == "graph_security"}
    problems = [
        f"correlation.writeback_sources: {name!r} is not a configured graph_security source"
        for name in corr.writeback_sources
        if name not in known
    ]
    if problems:
        raise ConfigError(problems)
    failed = False
    for name in corr.writeback_sources:
        with drain_lock(config.forwarder.state_dir) as held:
            if not held:
                _err(
                    f"dlpfwd writeback: another process is writing back from {config.forwarder.state_dir} "
                    "(dlpfwd run with writeback_interval, or another dlpfwd writeback); nothing done"
                )
                return 1
            queue = WriteBack(config.forwarder.state_dir, [name], corr.writeback_tag)
            writer = None if args.dry_run else GraphWriter(known[name].settings, log, transport=transport)
            try:
                result = queue.drain(writer, dry_run=args.dry_run, limit=max(1, args.limit))
            except ForwarderError as exc:
                _err(f"dlpfwd writeback: source {name}: {exc}")
                failed = True
                continue
            finally:
                if writer is not None:
                    writer.close()
                queue.close()
        for alert, text, incidents in result.planned:
            _out(f"dry run: alert {alert}: would comment:\n{text}")
            for incident in incidents:
                _out(f"dry run: incident {incident}: would add tag {corr.writeback_tag!r} (kept with existing tags)")
        _out(
            f"source {name}: commented {len(result.commented)} alert(s), recovered {len(result.recovered)} "
            f"already-written comment(s), tagged {len(result.tagged)} incident(s), deferred {len(result.deferred)}, "
            f"dead-lettered {len(result.dead)}"
        )
        for alert, reason in {**result.deferred, **result.dead}.items():
            _err(f"alert {alert}: {reason}")
        failed = failed or bool(result.deferred or result.dead)
    return 1 if failed else 0


def _permissions_configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--script",
        nargs="?",
        const="powershell",
        choices=("powershell", "az"),
        help="print a script that creates the app registration with them: Microsoft Graph PowerShell "
        "(default) or az CLI (bash)",
    )
    parser.add_argument("--app-name", default="dlpfwd", help="display name of the app registration the script creates")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _permissions(args: argparse.Namespace) -> int:
    from forwarder.config import load_config
    from forwarder.correlation.permissions import az_script, needs, powershell_script

    config = load_config(args.config, args.host)
    wanted = needs(config)
    if args.script:
        script = az_script if args.script == "az" else powershell_script
        _out(script(args.app_name, wanted).rstrip("\n"))
    elif args.json:
        _out(orjson.dumps([{**n.__dict__, "id": n.role_id} for n in wanted]).decode())
    else:
        for n in wanted:
            _out(f"{n.resource}\t{n.permission}\t{n.feature}\t{n.role_id}")
    return 0


@hookimpl
def dlpfwd_register_commands(register: Callable[..., None]) -> None:
    register(
        "incidents", "Defender XDR incidents: list, show, update (status, tags, comment...)", _incidents_configure,
        _run_incidents,
    )  # fmt: skip
    register("correlation", "size and cost of the correlation index", _correlation_configure, _correlation)
    register(
        "permissions", "the application permissions the configuration needs (--script: create the app with them)",
        _permissions_configure, _permissions,
    )  # fmt: skip
    register(
        "writeback", "comment correlated Defender alerts with their DLP context, tag their incidents",
        _writeback_configure, _writeback,
    )  # fmt: skip
