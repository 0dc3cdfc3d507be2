"""Write-back inside ``dlpfwd run``, against the tenant emulator over TLS.

* kill -9 of a ``dlpfwd run`` subprocess while a comment POST is in flight (the emulator has
  stored the comment and holds its response), in the middle of the queue; a restart finds the
  marker, records it without posting, writes the rest; a third run (``run --once`` plus the
  cron ``dlpfwd writeback``) writes nothing more: exactly one comment per correlated alert;
* metrics (``dlpfwd_writeback_total``), ``dlpfwd state`` / ``report`` counts, ``health``;
* a 429 storm on the comment endpoint: every Retry-After honoured, nothing lost;
* ``writeback_dry_run``: nothing written, counted as dry_run;
* a token without ReadWrite: the write-back is reported stopped by ``dlpfwd health``, naming
  ``SecurityAlert.ReadWrite.All``.

No sleeps: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from emulators.httpd import Request, Response
from emulators.tenant import EmulatorConfig, TenantEmulator
from forwarder.cli import main
from forwarder.config import load_config
from forwarder.correlation.index import DB_NAME
from forwarder.correlation.writeback import MARKER, GraphWriter, WriteBack, writeback_summary
from forwarder.plugins import PluginHost
from forwarder.runtime import Forwarder
from tests.sources.emulated import config_text, serve

EMULATOR = {"seed": 3, "audit_records": 700, "days": 2, "alert_every": 10, "alerts_per_incident": 2}


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``condition`` until truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.05)  # poll interval, not a sleep standing in for an event


class CommentGate:
    """Wraps the emulator: counts comment POSTs on alerts, can hold the response of the
    ``hold_at``-th stored comment until released, and can answer the first ``storm`` comment
    POSTs with 429 + ``Retry-After: 1`` (recording when each attempt arrived)."""

    def __init__(self, emu: Any, hold_at: int = 0, storm: int = 0, lose_responses: int = 0) -> None:
        self.stored = 0
        self.hold_at = hold_at
        self.storm = storm
        self.lose_responses = lose_responses  # store the comment, then answer 503
        self.held = threading.Event()
        self.release = threading.Event()
        self.attempts: list[tuple[float, str, int]] = []  # (monotonic time, alert path, status)
        self._lock = threading.Lock()
        inner = emu.app.handle

        def handle(request: Request) -> Response:
            is_comment = (
                request.method == "POST" and "/alerts_v2/" in request.path and request.path.endswith("/comments")
            )
            if not is_comment:
                return inner(request)
            with self._lock:
                if self.storm > 0:
                    self.storm -= 1
                    self.attempts.append((time.monotonic(), request.path, 429))
                    body = {"error": {"code": "TooManyRequests", "message": "Too many requests"}}
                    return Response.json(body, status=429, headers={"Retry-After": "1"})
            response: Response = inner(request)
            hold = False
            with self._lock:
                self.attempts.append((time.monotonic(), request.path, response.status))
                if response.status == 200:
                    self.stored += 1
                    hold = self.stored == self.hold_at
            if response.status == 200 and hold:
                self.held.set()
                self.release.wait(120)
            with self._lock:
                if response.status == 200 and self.lose_responses > 0:
                    self.lose_responses -= 1
                    body = {"error": {"code": "ServiceUnavailable", "message": "try again"}}
                    return Response.json(body, status=503)
            return response

        emu.app.handle = handle


class Setup:
    def __init__(self, tmp: Path, emu: Any, server: Any, extra: str = "") -> None:
        self.tmp = tmp
        self.emu = emu
        source = (
            f'name = "graph"\ntype = "graph_security"\ngraph_url = "{server.url}"\n'
            "all_alerts = true\nstart_days = 4\nrequests_per_minute = 0\npoll_interval = 60\nmax_retry_wait = 30"
        )
        text = config_text(emu, server, tmp, [source])
        corr = (
            '[correlation]\nenabled = true\nwriteback_sources = ["graph"]\n'
            f"writeback_interval = 0.2\nwriteback_limit = 3\n{extra}"
        )
        self.path = tmp / "dlpfwd.toml"
        self.path.write_text(corr + text.replace("[forwarder]\n", "[forwarder]\nshutdown_deadline = 20\n", 1))
        self.host = PluginHost().load()
        self.config = load_config(str(self.path), self.host)
        self.state = self.config.forwarder.state_dir
        self.logs: list[Path] = []

    def with_metrics(self, port: int) -> None:
        text = self.path.read_text().replace("[forwarder]\n", f"[forwarder]\nmetrics_port = {port}\n", 1)
        self.path.write_text(text)

    def spawn(self) -> subprocess.Popen[bytes]:
        log = self.tmp / f"run{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "forwarder", "run", "--config", str(self.path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(Path(__file__).resolve().parents[2]),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in self.logs if p.exists())

    def db(self, sql: str) -> list[tuple[Any, ...]]:
        path = Path(self.state) / DB_NAME
        if not path.exists():
            return []
        conn = sqlite3.connect(str(path), timeout=30)
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []  # the table does not exist yet
        finally:
            conn.close()

    def linked(self) -> list[str]:
        return sorted({a.split(":", 1)[1] for (a,) in self.db("SELECT alert FROM links")})

    def written(self) -> int:
        return len(self.db("SELECT alert FROM writeback WHERE written != ''"))

    def writer(self) -> GraphWriter:
        """A Graph writer with the app of the configuration's graph source (the caller closes it)."""
        return GraphWriter(self.config.source("graph").settings, logging.getLogger("test"))

    def queue(self) -> WriteBack:
        """The write-back queue of this state directory (the caller closes it)."""
        return WriteBack(self.state, ["graph"], TAG)

    def comments(self, alert: str) -> list[str]:
        writer = self.writer()
        try:
            return [c["comment"] for c in writer.alert_comments(alert)]
        finally:
            writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """``dlpfwd_writeback_total`` samples by outcome."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()  # noqa: S310
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("dlpfwd_writeback_total{"):
            labels, value = line.rsplit(" ", 1)
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = float(value)
    return out


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    emu = TenantEmulator(EmulatorConfig(**EMULATOR), state_dir=tmp_path / "emu")  # type: ignore[arg-type]
    with serve(emu) as server:
        yield emu, server


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def test_kill_9_mid_queue_restart_and_more_runs_leave_one_comment_per_alert(
    tmp_path: Path, emulator: tuple[Any, Any], capsys: Any
) -> None:
    emu, server = emulator
    setup = Setup(tmp_path, emu, server)
    # run 1: read and correlate everything (run --once does no write-back)
    assert main(["run", "--once", "--config", str(setup.path)]) == 0
    linked = setup.linked()
    assert len(linked) >= 4, "the emulator's Defender alerts share incidents with DLP alerts"
    kill_at = len(linked) // 2 + 1  # in the middle of the queue
    gate = CommentGate(emu, hold_at=kill_at)

    # run 2: dlpfwd run; the kill_at-th comment is stored by the service and its response
    # held (the POST is in flight): kill -9 now
    first = setup.spawn()
    try:
        assert gate.held.wait(90), "no comment POST reached the emulator\n" + setup.output()
        assert setup.written() == kill_at - 1  # recorded before the kill; the rest is due
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    finally:
        gate.release.set()
        _stop(first)
    assert gate.stored == kill_at

    # run 3, the restart: the in-flight comment is found by its marker (not posted again), the
    # rest written
    port = free_port()
    setup.with_metrics(port)
    second = setup.spawn()
    try:
        wait_for(lambda: setup.written() == len(linked), "every linked alert written after the restart")
        metrics = wait_for(
            lambda: (
                (m := _scrape_or_empty(port)).get("recovered") == 1
                and m.get("commented") == len(linked) - kill_at
                and m
            ),
            "write-back metrics",
        )
        assert metrics.get("tagged", 0) >= 1 and metrics.get("dead_lettered", 0) == 0
        second.send_signal(signal.SIGTERM)  # graceful shutdown, write-back thread included
        assert second.wait(60) == 0, setup.output()
    finally:
        _stop(second)
    assert gate.stored == len(linked)  # one POST per alert in all: none repeated

    # run 4 reads the alerts again (the comments updated them): nothing more is written
    assert main(["run", "--once", "--config", str(setup.path)]) == 0
    capsys.readouterr()
    assert main(["writeback", "--config", str(setup.path)]) == 0
    assert "commented 0 alert(s), recovered 0" in capsys.readouterr().out
    assert gate.stored == len(linked)
    for alert in linked:
        (comment,) = setup.comments(alert)
        assert MARKER in comment

    # state, report and health show the write-back
    summary = writeback_summary(setup.state)
    assert summary is not None
    assert summary["written"] == len(linked) and summary["dead"] == 0
    assert summary["outcomes"]["commented"] == len(linked) - 1 and summary["outcomes"]["recovered"] == 1
    assert main(["state", "--config", str(setup.path)]) == 0
    out = capsys.readouterr().out
    assert f"write-back: {len(linked)} alert(s) commented" in out and "1 found already written" in out
    main(["report", "--since", "1d", "--config", str(setup.path)])
    assert "write-back since" in capsys.readouterr().out
    assert main(["health", "--config", str(setup.path)]) == 0, capsys.readouterr()


def _scrape_or_empty(port: int) -> dict[str, float]:
    try:
        return scrape(port)
    except OSError:
        return {}  # not listening yet


def _run_in_thread(setup: Setup) -> tuple[Forwarder, threading.Event, threading.Thread, list[int]]:
    fw = Forwarder(setup.config, setup.host)
    stop = threading.Event()
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(fw.run(stop)), daemon=True)
    thread.start()
    return fw, stop, thread, code


def test_429_storm_on_comments_is_honoured_and_loses_nothing(tmp_path: Path, emulator: tuple[Any, Any]) -> None:
    emu, server = emulator
    gate = CommentGate(emu, storm=6)
    setup = Setup(tmp_path, emu, server)
    fw, stop, thread, code = _run_in_thread(setup)
    try:
        wait_for(lambda: setup.linked() and setup.written() == len(setup.linked()), "every alert written", 120)
    finally:
        stop.set()
        thread.join(60)
        fw.close()
    assert code == [0]
    linked = setup.linked()
    assert gate.stored == len(linked)
    assert sum(1 for a in gate.attempts if a[2] == 429) == 6
    # every retry after a 429 came at least Retry-After (1 s) later
    by_path: dict[str, list[tuple[float, int]]] = {}
    for t, path, status in gate.attempts:
        by_path.setdefault(path, []).append((t, status))
    for attempts in by_path.values():
        for (t0, s0), (t1, _s1) in zip(attempts, attempts[1:], strict=False):
            if s0 == 429:
                assert t1 - t0 >= 0.95
        assert [s for _, s in attempts].count(200) == 1
    assert fw.metrics.value("dlpfwd_writeback_total", source="graph", outcome="commented") == len(linked)
    assert fw.metrics.value("dlpfwd_writeback_total", source="graph", outcome="deferred") == 0
    assert fw.metrics.value("dlpfwd_writeback_due", source="graph") == 0
    for alert in linked:
        assert len(setup.comments(alert)) == 1


def test_dry_run_inside_run_writes_nothing(tmp_path: Path, emulator: tuple[Any, Any]) -> None:
    emu, server = emulator
    gate = CommentGate(emu)
    setup = Setup(tmp_path, emu, server, extra="writeback_dry_run = true\n")
    fw, stop, thread, code = _run_in_thread(setup)
    try:
        wait_for(
            lambda: (
                setup.linked()
                and fw.metrics.value("dlpfwd_writeback_total", source="graph", outcome="dry_run") == len(setup.linked())
            ),
            "dry-run counts",
        )
    finally:
        stop.set()
        thread.join(60)
        fw.close()
    assert code == [0]
    assert gate.attempts == [] and setup.written() == 0
    assert all(setup.comments(a) == [] for a in setup.linked())
    assert all(TAG not in (i.get("customTags") or []) for i in _incidents(setup))


TAG = "dlpfwd:dlp-correlated"


def _incidents(setup: Setup) -> list[dict[str, Any]]:
    writer = setup.writer()
    try:
        return writer.incidents.incidents(top=50)
    finally:
        writer.close()


def test_read_only_token_stops_the_write_back_and_health_names_the_permission(tmp_path: Path, capsys: Any) -> None:
    cfg = EmulatorConfig(**EMULATOR)  # type: ignore[arg-type]
    cfg.roles["https://graph.microsoft.com"] = ["SecurityAlert.Read.All", "SecurityIncident.Read.All"]
    emu = TenantEmulator(cfg, state_dir=tmp_path / "emu")
    with serve(emu) as server:
        setup = Setup(tmp_path, emu, server)
        fw, stop, thread, code = _run_in_thread(setup)
        try:
            wait_for(
                lambda: fw.metrics.value("dlpfwd_stopped", role="writeback", instance="graph") == 1, "write-back stop"
            )
            capsys.readouterr()
            assert main(["health", "--config", str(setup.path)]) == 1
            err = capsys.readouterr().err
            assert "writeback:graph" in err and "SecurityAlert.ReadWrite.All" in err
        finally:
            stop.set()
            thread.join(60)
            fw.close()
        assert code == [0]  # a stopped write-back does not fail the forwarder's delivery
        assert setup.written() == 0
        # a run that does not write back (run --once) leaves the alarm in place
        assert main(["run", "--once", "--config", str(setup.path)]) == 0
        capsys.readouterr()
        assert main(["health", "--config", str(setup.path)]) == 1
        assert "writeback:graph" in capsys.readouterr().err


class Crash(BaseException):
    """Stands for the process dying (kill -9) at a chosen call."""


def test_a_crash_between_the_comment_and_the_tag_is_finished_by_the_next_drain(
    tmp_path: Path, emulator: tuple[Any, Any]
) -> None:
    emu, server = emulator
    setup = Setup(tmp_path, emu, server)
    assert main(["run", "--once", "--config", str(setup.path)]) == 0
    first = setup.linked()[0]
    gate = CommentGate(emu)
    writer = setup.writer()
    queue = setup.queue()
    try:
        tag = writer.tag_incident

        def crash(incident: str, tag_name: str) -> bool:
            raise Crash

        setattr(writer, "tag_incident", crash)  # noqa: B010 - replace one method of this instance
        with pytest.raises(Crash):
            queue.drain(writer, limit=1)
        assert gate.stored == 1 and setup.written() == 0  # posted, not recorded
        setattr(writer, "tag_incident", tag)  # noqa: B010
        result = queue.drain(writer, limit=1)
        assert result.recovered == [first] and result.commented == [] and gate.stored == 1
        incident = str(writer._call("GET", f"security/alerts_v2/{first}", "get", "")["incidentId"])
        assert TAG in writer.incidents.get(incident)["customTags"]
        assert setup.written() == 1
    finally:
        queue.close()
        writer.close()


def test_a_5xx_after_the_comment_was_stored_does_not_post_it_twice(tmp_path: Path, emulator: tuple[Any, Any]) -> None:
    emu, server = emulator
    setup = Setup(tmp_path, emu, server)
    assert main(["run", "--once", "--config", str(setup.path)]) == 0
    linked = setup.linked()
    gate = CommentGate(emu, lose_responses=3)  # the first three comments: stored, then 503
    fw, stop, thread, code = _run_in_thread(setup)
    try:
        wait_for(lambda: setup.written() == len(linked), "every alert written")
    finally:
        stop.set()
        thread.join(60)
        fw.close()
    assert code == [0]
    assert gate.stored == len(linked)  # each comment stored once: the 503s were not re-POSTed
    assert fw.metrics.value("dlpfwd_writeback_total", source="graph", outcome="recovered") == 3
    assert fw.metrics.value("dlpfwd_writeback_total", source="graph", outcome="commented") == len(linked) - 3
    for alert in linked:
        assert len(setup.comments(alert)) == 1


def test_a_joining_dlp_event_adds_one_comment_and_an_evicted_link_none(
    tmp_path: Path, emulator: tuple[Any, Any]
) -> None:
    emu, server = emulator
    setup = Setup(tmp_path, emu, server)
    assert main(["run", "--once", "--config", str(setup.path)]) == 0
    writer = setup.writer()
    queue = setup.queue()
    db = sqlite3.connect(str(Path(setup.state) / DB_NAME), isolation_level=None)
    try:
        first = queue.drain(writer, limit=1000)
        linked = setup.linked()
        assert sorted(first.commented) == linked
        links = db.execute("SELECT dlp, alert FROM links ORDER BY alert, dlp").fetchall()
        alert = links[0][1]
        own = {d for d, a in links if a == alert}
        joining = next(d for d, a in links if d not in own)  # a DLP event linked to another alert
        db.execute(
            "INSERT INTO links (dlp, alert, reasons, late, announced, batch, created) VALUES (?, ?, ?, 1, 1, 0, 0)",
            (joining, alert, "same_user:upn"),
        )
        joined = queue.drain(writer, limit=1000)
        assert joined.commented == [alert.split(":", 1)[1]] and joined.recovered == []
        comments = setup.comments(alert.split(":", 1)[1])
        assert len(comments) == 2 and joining.split(":", 1)[-1] in comments[1]
        # links evicted from the index (max_links): nothing more is written
        db.execute("DELETE FROM links WHERE alert = ? AND dlp = ?", (alert, sorted(own)[0]))
        assert queue.drain(writer, limit=1000).counts() == dict.fromkeys(
            ("commented", "recovered", "tagged", "deferred", "dead_lettered", "dry_run"), 0
        )
        assert len(setup.comments(alert.split(":", 1)[1])) == 2
    finally:
        db.close()
        queue.close()
        writer.close()
