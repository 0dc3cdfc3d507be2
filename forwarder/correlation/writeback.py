"""Write-back to Defender XDR: one comment per correlated alert, a tag on its incident.

The queue is derived from the links table, so it is as durable as the links (the index enqueues
nothing, nothing is lost): every Defender alert read by a source named in
``[correlation] writeback_sources`` that has links is due when the set of its linked DLP events
differs from the set last written. A drain does not read every link to find them: in one
transaction of the same database it takes the links created since its last drain (rowid above a
mark, ``writeback_mark``), adds their alerts to ``writeback_pending`` and moves the mark; an alert
leaves the pending set only after its digest is recorded (step 4), its dead letter, or when it is
found settled. A rebuilt or renumbered links table is detected by the mark and read again whole.
Per alert:

1. the comment summarises the DLP context -- number of DLP events, policies, rules, sensitive
   information type NAMES (never matched values), users, files, times, reasons, portal links --
   and ends with a marker ``dlpfwd-correlation:<digest>``, the digest naming the set of DLP
   events;
2. before posting, the alert's comments are read: if one already carries the marker (the
   process died after the POST and before recording it), it is recorded, not posted again.
   Comments are append-only in Graph; when new DLP events join, a new comment with the new
   digest is added (never two comments for the same digest);
3. each incident of the alert gets ``writeback_tag`` in ``customTags``, keeping the tags already
   there (read first; nothing sent when present);
4. the ``writeback`` table records the digest written, after the tags (a crash or a failed
   tag before that leaves the alert due: the next drain finds the marker, tags, records).
   Failures after the client's own retries (429/503 with Retry-After, backoff) are retried
   at a later drain with exponential back-off; a permanent 4xx (400, 404) dead-letters the
   alert; 401/403 stop the drain with an error naming the permission.

The comment POST itself is never repeated blindly: a 429 means the comment was not taken and
it is sent again after ``Retry-After``; any other failure (5xx, a connection reset) may come
after the service stored it, so the alert's comments are read again first and the marker, if
there, ends the attempt.

Each outcome is also appended to ``writeback_log`` (time, source, outcome, alert or incident)
for ``dlpfwd report`` / ``dlpfwd state`` (:func:`writeback_summary`); rows older than
:data:`LOG_RETENTION` are purged.

A comment also updates the alert's ``lastUpdateDateTime``, so the source reads the alert again:
its links are unchanged, the digest is the same, nothing more is written (no loop).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from forwarder.correlation.index import DB_NAME
from forwarder.errors import FatalError, RetriableError

log = logging.getLogger("dlpfwd.writeback")

MARKER = "dlpfwd-correlation:"
ALERT_WRITE = "SecurityAlert.ReadWrite.All"
INCIDENT_WRITE = "SecurityIncident.ReadWrite.All"
MAX_LISTED = 20  # DLP events listed one by one in a comment; the rest are counted
LOG_RETENTION = 31 * 86400.0  # writeback_log rows are kept a month, like the ledger
#: Outcomes counted per drain (metrics ``dlpfwd_writeback_total{source, outcome}``, the log).
OUTCOMES = ("commented", "recovered", "tagged", "deferred", "dead_lettered", "dry_run")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS writeback (alert TEXT PRIMARY KEY, written TEXT NOT NULL DEFAULT '',
    tagged TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0,
    dead TEXT NOT NULL DEFAULT '', comments INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS writeback_seen (alert TEXT NOT NULL, dlp TEXT NOT NULL, PRIMARY KEY (alert, dlp))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS writeback_log (at REAL NOT NULL, source TEXT NOT NULL, outcome TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS writeback_log_at ON writeback_log (at);
CREATE TABLE IF NOT EXISTS writeback_pending (source TEXT NOT NULL, alert TEXT NOT NULL, PRIMARY KEY (source, alert))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS writeback_mark (source TEXT PRIMARY KEY, link INTEGER NOT NULL, dlp TEXT NOT NULL,
    alert TEXT NOT NULL, created REAL NOT NULL) WITHOUT ROWID;
"""


def digest_of(dlp_ids: list[str]) -> str:
    """Names a set of DLP event ids (order-free), 16 hex digits."""
    return hashlib.sha256("\n".join(sorted(dlp_ids)).encode()).hexdigest()[:16]


@dataclass
class Due:
    """One alert whose comment is due: its summary, its DLP events (summaries), link reasons."""

    alert: str  # index id, "alert:<graph id>"
    info: dict[str, Any]
    dlp: list[tuple[dict[str, Any], tuple[str, ...]]]
    digest: str
    dlp_ids: list[str] = field(default_factory=list)  # every linked DLP event id (indexed or expired)

    @property
    def graph_id(self) -> str:
        return self.alert.split(":", 1)[1] if self.alert.startswith("alert:") else self.alert


def comment_text(due: Due) -> str:
    """The comment for ``due`` (plain text; no matched values ever)."""
    events = sorted(due.dlp, key=lambda d: (d[0]["time"], d[0]["id"]))

    def union(key: str) -> str:
        values = sorted({v for info, _ in events for v in info.get(key, [])})
        return ", ".join(values) if values else "-"

    lines = [
        f"[dlpfwd] Purview DLP context: {len(events)} DLP event(s) linked to this alert",
        f"Policies: {union('policies')}",
        f"Rules: {union('rules')}",
        f"Sensitive information types: {union('sits')}",
        f"Users: {union('users')}",
        f"Files: {union('files')}",
        "Events:",
    ]
    for info, reasons in events[:MAX_LISTED]:
        what = info.get("title") or info.get("operation") or info["kind"]
        lines.append(f"- {info['time']} {info['kind']} {info['id']}: {what} ({', '.join(reasons)})")
        if info.get("alert_url"):
            lines.append(f"  {info['alert_url']}")
    if len(events) > MAX_LISTED:
        lines.append(f"- ... and {len(events) - MAX_LISTED} more")
    lines.append(f"{MARKER}{due.digest}")
    return "\n".join(lines)


@dataclass
class DrainResult:
    """What one drain did."""

    commented: list[str] = field(default_factory=list)  # alert ids
    recovered: list[str] = field(default_factory=list)  # marker found: recorded without posting
    tagged: list[str] = field(default_factory=list)  # incident ids
    deferred: dict[str, str] = field(default_factory=dict)  # alert -> reason (retried later)
    dead: dict[str, str] = field(default_factory=dict)  # alert -> reason (permanent)
    planned: list[tuple[str, str, list[str]]] = field(default_factory=list)  # dry run: alert, comment, incidents
    remaining: int = 0  # due alerts left for a later drain (limit reached or stopped)

    def counts(self) -> dict[str, int]:
        """Outcome -> number, the keys of :data:`OUTCOMES`."""
        return {
            "commented": len(self.commented),
            "recovered": len(self.recovered),
            "tagged": len(self.tagged),
            "deferred": len(self.deferred),
            "dead_lettered": len(self.dead),
            "dry_run": len(self.planned),
        }


class WriteBack:
    """The write-back queue over ``correlation.sqlite3`` in ``state_dir``."""

    def __init__(self, state_dir: str, sources: list[str], tag: str) -> None:
        import os

        self.sources = set(sources)
        self.tag = tag
        self.db = sqlite3.connect(os.path.join(state_dir, DB_NAME), isolation_level=None, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def due(self, now: float | None = None) -> list[Due]:
        """Alerts linked to a DLP event that no comment of theirs covers yet, not dead, not
        deferred, by alert id. A link evicted from the index (``max_links``) makes no alert due:
        only DLP events joining do (``writeback_seen`` holds the events each alert's comments
        covered).

        Only the pending alerts are examined (:meth:`_take_new_links` adds those of the links
        created since the last drain): a drain with nothing new reads no link. A pending alert
        found settled (written, covered, dead, gone from the index) leaves the pending set."""
        now = time.time() if now is None else now
        self._take_new_links()
        rows = self._rows("SELECT alert FROM writeback_pending WHERE source IN ({})", sorted(self.sources))
        pending = sorted({a for (a,) in rows})
        by_alert: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for dlp, alert, reasons in self._rows("SELECT dlp, alert, reasons FROM links WHERE alert IN ({})", pending):
            by_alert.setdefault(alert, []).append((dlp, tuple(reasons.split(","))))
        state = {
            a: (w, d, n)
            for a, w, d, n in self._rows(
                "SELECT alert, written, dead, next_at FROM writeback WHERE alert IN ({})", pending
            )
        }
        seen: dict[str, set[str]] = {}
        for alert, dlp in self._rows("SELECT alert, dlp FROM writeback_seen WHERE alert IN ({})", pending):
            seen.setdefault(alert, set()).add(dlp)
        out: list[Due] = []
        settled: list[str] = []
        for alert in pending:
            dlps = sorted(by_alert.get(alert, []))
            ids = [d for d, _ in dlps]
            digest = digest_of(ids)
            written, dead, next_at = state.get(alert, ("", "", 0.0))
            covered = seen.get(alert)
            if not dlps or dead or written == digest or (covered is not None and covered.issuperset(ids)):
                settled.append(alert)
                continue
            if next_at > now:
                continue  # deferred: stays pending
            infos = self._infos([alert] + ids)
            info = infos.get(alert)
            linked = [(infos[d], r) for d, r in dlps if d in infos]
            if info is None or info.get("source") not in self.sources or not linked:
                settled.append(alert)  # gone from the index: a DLP event joining makes it pending again
                continue
            out.append(Due(alert, info, linked, digest, ids))
        self._settle(settled)
        return out

    def waiting(self) -> int:
        """Alerts of this write-back's sources still waiting for their write-back: due, beyond
        a drain's limit, or deferred until their retry time (the pending set, not the links)."""
        rows = self._rows("SELECT DISTINCT alert FROM writeback_pending WHERE source IN ({})", sorted(self.sources))
        return len({a for (a,) in rows})

    def _rows(self, sql: str, ids: list[str]) -> Iterator[tuple[Any, ...]]:
        """``sql`` (one ``IN ({})``) over ``ids`` in chunks of 500 placeholders."""
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            yield from self.db.execute(sql.format(",".join("?" * len(chunk))), chunk)

    def _settle(self, alerts: list[str]) -> None:
        """Take ``alerts`` out of the pending set of this write-back's sources."""
        self.db.executemany(
            "DELETE FROM writeback_pending WHERE source = ? AND alert = ?",
            [(s, a) for a in alerts for s in sorted(self.sources)],
        )

    def _take_new_links(self) -> None:
        """Add to ``writeback_pending`` the alerts (of each of this write-back's sources) of the
        links created since that source's mark, and move the mark to the newest link: one
        transaction, so a link is either behind the mark with its alert pending, or ahead of it.

        Links get increasing rowids (the index inserts, and evicts the oldest first). The mark
        names its link (rowid, ends, creation time): when that row holds another link, or is
        gone while older rows remain, the table was rebuilt or renumbered (an index of an older
        layout dropped, a VACUUM) and every link is read again once, as on the first drain."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for source in sorted(self.sources):
                start = self._mark_start(source)
                rows = self.db.execute(
                    "SELECT rowid, dlp, alert, created FROM links WHERE rowid > ? ORDER BY rowid", (start,)
                ).fetchall()
                if not rows:
                    continue
                alerts = sorted({r[2] for r in rows})
                infos = self._infos(alerts)
                self.db.executemany(
                    "INSERT OR IGNORE INTO writeback_pending (source, alert) VALUES (?, ?)",
                    [(source, a) for a in alerts if infos.get(a, {}).get("source") == source],
                )
                link, dlp, alert, created = rows[-1]
                self.db.execute(
                    "INSERT OR REPLACE INTO writeback_mark (source, link, dlp, alert, created) VALUES (?, ?, ?, ?, ?)",
                    (source, link, dlp, alert, created),
                )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _mark_start(self, source: str) -> int:
        """The rowid after which ``source``'s new links start (0: read every link)."""
        mark = self.db.execute(
            "SELECT link, dlp, alert, created FROM writeback_mark WHERE source = ?", (source,)
        ).fetchone()
        if mark is None:
            return 0
        link = int(mark[0])
        row = self.db.execute("SELECT dlp, alert, created FROM links WHERE rowid = ?", (link,)).fetchone()
        if row == tuple(mark[1:]):
            return link
        if row is None:
            (low,) = self.db.execute("SELECT min(rowid) FROM links").fetchone()
            if low is not None and low > link:
                return link  # the marked link and every older one were evicted
        return 0

    def _infos(self, eids: list[str]) -> dict[str, dict[str, Any]]:
        """The index's summaries of ``eids`` (those still indexed)."""
        return {
            eid: orjson.loads(info) for eid, info in self._rows("SELECT eid, info FROM items WHERE eid IN ({})", eids)
        }

    def _record(self, alert: str, **values: Any) -> None:
        self.db.execute("INSERT OR IGNORE INTO writeback (alert) VALUES (?)", (alert,))
        sets = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(f"UPDATE writeback SET {sets} WHERE alert = ?", (*values.values(), alert))  # noqa: S608

    def drain(
        self,
        api: Any,
        dry_run: bool = False,
        limit: int = 100,
        now: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> DrainResult:
        """Write what is due through ``api`` (:class:`GraphWriter`); see the module docstring.
        ``should_stop`` is asked before each alert (graceful shutdown: the alert in hand is
        finished and recorded, the rest stays due)."""
        now = time.time() if now is None else now
        result = DrainResult()
        due_list = self.due(now)
        for done, due in enumerate(due_list[:limit]):
            if should_stop is not None and should_stop():
                result.remaining = len(due_list) - done
                break
            text = comment_text(due)
            incidents = list(due.info.get("incidents", []))
            if dry_run:
                result.planned.append((due.graph_id, text, incidents))
                continue
            try:
                marker = f"{MARKER}{due.digest}"
                comments = api.alert_comments(due.graph_id)
                if any(marker in (c.get("comment") or "") for c in comments):
                    outcome = "recovered"
                elif api.comment_alert(due.graph_id, text, marker) is False:
                    outcome = "recovered"  # found after an ambiguous failure of the POST
                else:
                    outcome = "commented"
                tagged = set(self._tagged(due.alert))
                for incident in incidents:
                    if incident in tagged:
                        continue
                    if api.tag_incident(incident, self.tag):
                        result.tagged.append(incident)
                        self._log("tagged", incident)
                    tagged.add(incident)
                    self._record(due.alert, tagged=",".join(sorted(tagged)))
                # Recorded once the tags are there too: a crash (or a failed tag) before this
                # line leaves the alert due; the next drain finds the marker and does the rest.
                self._record(due.alert, written=due.digest, attempts=0, next_at=0.0)
                self.db.executemany(
                    "INSERT OR IGNORE INTO writeback_seen (alert, dlp) VALUES (?, ?)",
                    [(due.alert, d) for d in due.dlp_ids],
                )
                self.db.execute("UPDATE writeback SET comments = comments + 1 WHERE alert = ?", (due.alert,))
                self._settle([due.alert])  # last: a crash before it leaves a recorded alert pending, settled next time
                (result.commented if outcome == "commented" else result.recovered).append(due.graph_id)
                self._log(outcome, due.graph_id)
            except RetriableError as exc:
                attempts = self._attempts(due.alert) + 1
                wait = max(exc.retry_after or 0.0, min(3600.0, 30.0 * 2 ** (attempts - 1)))
                self._record(due.alert, attempts=attempts, next_at=now + wait)
                result.deferred[due.graph_id] = str(exc)
                self._log("deferred", due.graph_id)
            except PermanentError as exc:
                self._record(due.alert, dead=str(exc))
                self._settle([due.alert])
                result.dead[due.graph_id] = str(exc)
                self._log("dead_lettered", due.graph_id)
        else:
            result.remaining = max(0, len(due_list) - limit)
        return result

    def _log(self, outcome: str, target: str) -> None:
        self.db.execute(
            "INSERT INTO writeback_log (at, source, outcome, target) VALUES (?, ?, ?, ?)",
            (time.time(), ",".join(sorted(self.sources)), outcome, target),
        )

    def purge_log(self, before: float) -> int:
        """Forget ``writeback_log`` rows older than ``before``; returns how many."""
        return self.db.execute("DELETE FROM writeback_log WHERE at < ?", (before,)).rowcount

    def _tagged(self, alert: str) -> list[str]:
        row = self.db.execute("SELECT tagged FROM writeback WHERE alert = ?", (alert,)).fetchone()
        return [t for t in (row[0] if row else "").split(",") if t]

    def _attempts(self, alert: str) -> int:
        row = self.db.execute("SELECT attempts FROM writeback WHERE alert = ?", (alert,)).fetchone()
        return int(row[0]) if row else 0

    def stats(self) -> dict[str, int]:
        return _stats(self.db)

    def close(self) -> None:
        self.db.close()


class PermanentError(FatalError):
    """A 4xx other than 401/403/408/409/423/429: the alert is dead-lettered."""


class GraphWriter:
    """The Graph calls of the write-back, over :class:`forwarder.api.ApiClient` (auth, budget,
    Retry-After and back-off on 429/5xx)."""

    def __init__(self, settings: Any, log: logging.Logger, transport: Any = None) -> None:
        from forwarder.correlation.incidents import IncidentsApi

        self.incidents = IncidentsApi(settings, log, transport=transport)
        self.api = self.incidents.api
        self.log = log
        self.sleep: Callable[[float], None] = time.sleep

    def _call(self, method: str, path: str, what: str, permission: str, json: Any = None) -> Any:
        """:meth:`IncidentsApi.call`; a permanent 4xx raises :class:`PermanentError` (dead letter)."""
        return self.incidents.call(method, path, what, permission, json, permanent=PermanentError)

    def alert_comments(self, alert_id: str) -> list[dict[str, Any]]:
        data = self._call("GET", f"security/alerts_v2/{alert_id}", f"get alert {alert_id}", "SecurityAlert.Read.All")
        comments = data.get("comments") if isinstance(data, dict) else None
        return [c for c in comments or [] if isinstance(c, dict)]

    def comment_alert(self, alert_id: str, text: str, marker: str = "") -> bool:
        """POST the comment; True once posted, False when ``marker`` was found on the alert
        after an ambiguous failure (see the module docstring). A 429 is retried after its
        ``Retry-After``; all retries stay within the client's ``max_wait``; what is still
        failing raises :class:`RetriableError`."""
        body = {"@odata.type": "microsoft.graph.security.alertComment", "comment": text}
        path, what = f"security/alerts_v2/{alert_id}/comments", f"comment on alert {alert_id}"
        waited, attempt = 0.0, 0
        while True:
            attempt += 1
            throttled = self.api.throttled
            saved, self.api.max_attempts = self.api.max_attempts, 1  # retries decided here
            try:
                self._call("POST", path, what, ALERT_WRITE, body)
                return True
            except RetriableError as exc:
                wait = exc.retry_after if exc.retry_after is not None else min(30.0, 2.0**attempt)
                if attempt >= saved or waited + wait > self.api.max_wait:
                    raise
                ambiguous = self.api.throttled == throttled  # not a 429: it may have been stored
                reason = str(exc)
            finally:
                self.api.max_attempts = saved
            self.log.info("%s; retrying in %.1f s", reason, wait)
            self.sleep(wait)
            waited += wait
            if ambiguous and marker and any(marker in (c.get("comment") or "") for c in self.alert_comments(alert_id)):
                return False

    def tag_incident(self, incident_id: str, tag: str) -> bool:
        """Add ``tag`` to the incident's customTags (kept); False when it was there already."""
        data = self._call("GET", f"security/incidents/{incident_id}", f"get incident {incident_id}", INCIDENT_WRITE)
        tags = [t for t in (data.get("customTags") or []) if isinstance(t, str)] if isinstance(data, dict) else []
        if tag in tags:
            return False
        self._call(
            "PATCH",
            f"security/incidents/{incident_id}",
            f"tag incident {incident_id}",
            INCIDENT_WRITE,
            {"customTags": [*tags, tag]},
        )
        return True

    def close(self) -> None:
        self.incidents.close()


def _stats(db: sqlite3.Connection) -> dict[str, int]:
    row = db.execute("SELECT count(*), sum(written != ''), sum(dead != ''), sum(comments) FROM writeback").fetchone()
    return {"alerts": row[0] or 0, "written": row[1] or 0, "dead": row[2] or 0, "comments": row[3] or 0}


def writeback_summary(state_dir: str, since: float | None = None) -> dict[str, Any] | None:
    """What the write-back did, read-only from ``correlation.sqlite3`` (``None`` when it never
    ran): per alert state (``alerts`` with a record, ``written``, ``dead``, ``comments``,
    ``deferred_now``) and, from the log, the count of each outcome at or after ``since``
    (``outcomes``) and the time of the last one (``last``)."""
    import os

    path = os.path.join(state_dir, DB_NAME)
    if not os.path.exists(path):
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "writeback" not in tables:
            return None
        out: dict[str, Any] = _stats(db)
        out["deferred_now"] = db.execute(
            "SELECT count(*) FROM writeback WHERE dead = '' AND next_at > ?", (time.time(),)
        ).fetchone()[0]
        outcomes = dict.fromkeys(OUTCOMES[:-1], 0)
        last = None
        if "writeback_log" in tables:
            for outcome, n in db.execute(
                "SELECT outcome, count(*) FROM writeback_log WHERE at >= ? GROUP BY outcome", (since or 0.0,)
            ):
                outcomes[outcome] = n
            last = db.execute("SELECT max(at) FROM writeback_log").fetchone()[0]
        out["outcomes"] = outcomes
        out["last"] = last
        return out
    finally:
        db.close()


@contextlib.contextmanager
def drain_lock(state_dir: str) -> Iterator[bool]:
    """Hold ``writeback.lock`` in ``state_dir`` while draining: yields True when this process
    holds it, False when another process is draining (never waits)."""
    import fcntl
    import os

    fd = os.open(os.path.join(state_dir, "writeback.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
