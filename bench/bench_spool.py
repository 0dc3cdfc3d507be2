"""Benchmark of the delivery core: spool + file sink throughput, memory with a large backlog,
restart time after ``kill -9``.

Run: ``.venv/bin/python bench/bench_spool.py [--events 200000] [--backlog 1000000]``

1. **Throughput**: a source yields realistic DLP events (the canonical events of
   :mod:`forwarder.testing.events`, 1-3 KB each with ``raw``) through the real pipeline
   (sensitive-value policy, dedup, one transaction per 500-event batch) into the spool, and a
   drainer delivers them to the built-in ``file`` sink (fsync per batch). Normalization is
   excluded (measured by ``bench/bench_sources.py``): the source hands over prebuilt events.
   The baseline is a plain ``orjson.loads`` + ``orjson.dumps`` pass over the same events'
   JSON, measured in the same run. Target: >= 50 % of the baseline rate.
2. **Backlog**: a child process spools ``--backlog`` events with no drainer running and
   reports its peak RSS (target <= 150 MB; must not grow with the backlog); it is then
   killed with SIGKILL.
3. **Restart**: a new process opens the state directory and reads the first batch of that
   backlog; the time to "ready to deliver" must be < 2 s. It then drains the whole backlog
   into the file sink and reports its peak RSS and rate.

A third line measures the disk alone (the same bytes written and fdatasynced per batch, nothing
else): the ceiling of the stage on this disk.

Figures depend on the machine and on its load (the bench shares 2 cores with everything
else running); run it on an idle machine for comparable numbers.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from forwarder.config import Config, ForwarderSettings, SinkConfig, SourceConfig  # noqa: E402
from forwarder.hookspecs import hookimpl  # noqa: E402
from forwarder.options import SinkOptions, SourceOptions  # noqa: E402
from forwarder.plugins import PluginHost  # noqa: E402
from forwarder.schema import DlpEvent  # noqa: E402
from forwarder.source import NormalizeContext, RawRecord, Source, SourceBatch  # noqa: E402

BATCH = 500
POOL = 2000
CPU: dict[str, float] = {}  # CPU microseconds per event (all threads): steadier than wall time on a busy machine


def peak_rss_mb() -> float:
    """This process's RSS high-water mark (VmHWM). Not ``getrusage``: on Linux its ru_maxrss
    survives fork + exec, so a child would report its parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


def event_pool(n: int = POOL) -> list[DlpEvent]:
    """``n`` distinct realistic events (1-3 KB), cycled by the bench source."""
    from forwarder.testing.events import (
        endpoint_usb_copy,
        graph_alert,
        graph_incident,
        rule_match_exchange,
        rule_undo_sharepoint,
    )

    makers = [rule_match_exchange, rule_undo_sharepoint, endpoint_usb_copy, graph_alert, graph_incident]
    templates = [m() for m in makers]
    pool = []
    for i in range(n):
        ev = copy.deepcopy(templates[i % len(templates)])
        ev.title = f"{ev.title} #{i}"
        pool.append(ev)
    return pool


@dataclass
class BenchSettings:
    count: int = 100_000
    offset: int = 0


_POOL: list[DlpEvent] = []


class BenchSource(Source):
    """Yields ``count`` events in batches of 500; each record carries a prebuilt event."""

    settings_class = BenchSettings

    def poll(self, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        start = int((cursor or {}).get("next", 0))
        end_all = self.settings.count
        offset = self.settings.offset
        while start < end_all:
            end = min(end_all, start + BATCH)
            records = [
                RawRecord("bench", {"i": i + offset}, None, f"unit-{(i + offset) // 10_000}") for i in range(start, end)
            ]
            yield SourceBatch(records=records, cursor={"next": end})
            start = end


def normalize_bench(data: dict[str, Any], ctx: NormalizeContext) -> list[DlpEvent]:
    i = data["i"]
    ev = copy.copy(_POOL[i % len(_POOL)])  # shallow: the pool's nested objects are shared, read-only
    ev.id = f"ev-{i}"
    ev.idempotency_key = f"ev-{i}|2026-11-01T00:00:00Z"
    return [ev]


class BenchPlugin:
    @hookimpl
    def dlpfwd_register_sources(self, register: Any) -> None:
        register("bench", BenchSource)

    @hookimpl
    def dlpfwd_register_normalizers(self, register: Any) -> None:
        register("bench", normalize_bench)


def make_host() -> PluginHost:
    import sinks.file

    host = PluginHost()
    host.register_object("bench", BenchPlugin())
    host.register_object("file", sinks.file)
    host.collect(strict=True)
    return host


def make_config(workdir: str, count: int, offset: int = 0) -> Config:
    from sinks.file import FileSettings

    opts = SinkOptions()
    opts.batch.max_events = BATCH
    opts.batch.max_wait = 0.0
    opts.spool.max_events = 10_000_000
    opts.spool.max_bytes = 64 * 1024**3
    return Config(
        forwarder=ForwarderSettings(state_dir=os.path.join(workdir, "state")),
        sources=[SourceConfig("bench", "bench", BenchSettings(count, offset), SourceOptions(poll_interval=3600))],
        sinks=[
            SinkConfig(
                "file", "file", FileSettings(path=os.path.join(workdir, "out", "events.jsonl"), max_bytes=0), opts
            )
        ],
    )


# --------------------------------------------------------------------------- phases


def baseline(pool: list[DlpEvent], n: int) -> float:
    """Events/s of a plain orjson loads + dumps pass over the same events."""
    blobs = [orjson.dumps(e) for e in pool]
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        orjson.dumps(orjson.loads(blobs[i % len(blobs)]))
    CPU["baseline"] = (time.process_time() - c0) / n * 1e6
    return n / (time.perf_counter() - t0)


def throughput(n: int) -> dict[str, float]:
    from forwarder.runtime import Forwarder

    workdir = tempfile.mkdtemp(prefix="bench-spool-")
    try:
        with Forwarder(make_config(workdir, n), make_host()) as fw:
            t0, c0 = time.perf_counter(), time.process_time()
            result = fw.run_once()
            elapsed = time.perf_counter() - t0
            CPU["pipeline"] = (time.process_time() - c0) / n * 1e6
            assert result.ok, result
            assert result.delivered["file"] == n, result
        size = os.path.getsize(os.path.join(workdir, "out", "events.jsonl"))
        return {"rate": n / elapsed, "seconds": elapsed, "avg_bytes": size / n}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def stage(n: int) -> dict[str, float]:
    """The spool + file sink stage alone: serialized events (the pool's JSON with unique
    idempotency keys) go through the batch transaction (dedup, ledger, cursor, spool append)
    while a drainer delivers them to the file sink (fsync per batch), concurrently."""
    from forwarder.pipeline import BatchCounts
    from forwarder.runtime import Forwarder
    from forwarder.source import SourceBatch as Batch

    blobs = [orjson.dumps(e) for e in _POOL]
    workdir = tempfile.mkdtemp(prefix="bench-stage-")
    try:
        with Forwarder(make_config(workdir, n), make_host()) as fw:
            routes = fw.pipeline.routes
            drainer = fw.drainers["file"]
            stop, finish = threading.Event(), threading.Event()
            thread = threading.Thread(target=drainer.run, args=(stop, finish))
            t0, c0 = time.perf_counter(), time.process_time()
            thread.start()
            for start in range(0, n, BATCH):
                prepared: list[Any] = [
                    (f"ev-{i}|2026-11-01T00:00:00Z", f"unit-{i // 10_000}", [blobs[i % len(blobs)]])
                    for i in range(start, min(n, start + BATCH))
                ]
                fw.pipeline.commit(
                    "bench",
                    Batch(cursor={"next": start}),
                    "source:bench",
                    prepared,
                    [],
                    routes,
                    True,
                    time.time(),
                    BatchCounts(),
                )
                drainer.wake()
            t_spooled = time.perf_counter() - t0
            finish.set()
            thread.join()
            elapsed = time.perf_counter() - t0
            CPU["stage"] = (time.process_time() - c0) / n * 1e6
            assert drainer.delivered == n, drainer.delivered
        return {"rate": n / elapsed, "seconds": elapsed, "spool_rate": n / t_spooled}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def disk_ceiling(n: int) -> float:
    """Events/s of the file sink's disk work alone: the same bytes appended in 500-event batches
    with an fdatasync each, nothing else. No spool can beat it; on a virtual disk shared with
    other work it is often what bounds the stage."""
    blobs = [orjson.dumps(e) for e in _POOL]
    workdir = tempfile.mkdtemp(prefix="bench-disk-")
    try:
        fd = os.open(os.path.join(workdir, "events.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        t0 = time.perf_counter()
        for start in range(0, n, BATCH):
            data = b"\n".join([blobs[i % len(blobs)] for i in range(start, min(n, start + BATCH))]) + b"\n"
            os.write(fd, data)
            os.fdatasync(fd)
        rate = n / (time.perf_counter() - t0)
        os.close(fd)
        return rate
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def child_fill(workdir: str, n: int) -> None:
    """Spool ``n`` events with no drainer (a sink that is down), print RSS as it goes, then wait
    to be killed."""
    from forwarder.runtime import Forwarder

    fw = Forwarder(make_config(workdir, n), make_host())
    src = fw.sources["bench"]
    stop = threading.Event()
    done = 0
    t0 = time.perf_counter()
    for batch in src.poll(None):
        fw._process("bench", batch, "source:bench", stop, None, True)
        done += len(batch.records)
        if done % 100_000 == 0:
            print(f"progress {done} rss_mb={current_rss_mb():.1f} peak_mb={peak_rss_mb():.1f}", flush=True)
    rate = n / (time.perf_counter() - t0)
    print(f"filled {done} rate={rate:.0f} peak_mb={peak_rss_mb():.1f}", flush=True)
    time.sleep(3600)


def child_restart(workdir: str, n: int) -> None:
    """Open the state after a kill -9, time until the first batch is ready, then drain it all."""
    t_start = time.perf_counter()
    from forwarder.runtime import Forwarder

    t_imported = time.perf_counter()
    rss_before = current_rss_mb()
    fw = Forwarder(make_config(workdir, n), make_host())
    depth = fw.store.spool_depth("file")[0]
    rows = fw.store.read_spool("file", 0, BATCH)
    t_ready = time.perf_counter()
    print(
        f"ready depth={depth} first_batch={len(rows)} open_s={t_ready - t_imported:.3f} "
        f"process_s={t_ready - t_start:.3f} rss_after_imports_mb={rss_before:.1f}",
        flush=True,
    )
    drainer = fw.drainers["file"]
    stop, finish = threading.Event(), threading.Event()
    finish.set()
    t0 = time.perf_counter()
    drainer.run(stop, finish)
    elapsed = time.perf_counter() - t0
    left = fw.store.spool_depth("file")[0]
    print(f"drained {drainer.delivered} left={left} rate={drainer.delivered / elapsed:.0f} peak_mb={peak_rss_mb():.1f}")
    fw.close()


def backlog(n: int) -> dict[str, str]:
    workdir = tempfile.mkdtemp(prefix="bench-backlog-")
    out: dict[str, str] = {}
    try:
        cmd = [sys.executable, __file__, "--child", "fill", "--workdir", workdir, "--backlog", str(n)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            print("  fill:", line.strip(), flush=True)
            if line.startswith("filled"):
                out["fill"] = line.strip()
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        db = os.path.join(workdir, "state", "state.sqlite3")
        out["db_mb"] = f"{os.path.getsize(db) / 1024 / 1024:.0f}"
        cmd = [sys.executable, __file__, "--child", "restart", "--workdir", workdir, "--backlog", str(n)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        for line in res.stdout.splitlines():
            print("  restart:", line, flush=True)
            key = line.split(" ", 1)[0]
            out[key] = line
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events for the throughput phase")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="events for the backlog phase (0 = skip)")
    parser.add_argument("--child", choices=("fill", "restart"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "fill":
        _POOL.extend(event_pool(200))  # a small pool: the RSS measured is the forwarder's, not the bench's
        child_fill(args.workdir, args.backlog)
        return
    if args.child == "restart":
        child_restart(args.workdir, args.backlog)
        return
    _POOL.extend(event_pool())
    base = baseline(_POOL, args.events)
    print(f"baseline orjson loads+dumps: {base:,.0f} events/s", flush=True)
    st = stage(args.events)
    print(
        f"spool + file sink stage (serialized events in, file out): {st['rate']:,.0f} events/s "
        f"({st['rate'] / base:.0%} of baseline; spool appends alone {st['spool_rate']:,.0f} events/s)",
        flush=True,
    )
    disk = disk_ceiling(args.events)
    print(
        f"disk alone (the same bytes, write + fdatasync per {BATCH}-event batch): {disk:,.0f} events/s "
        f"({disk / base:.0%} of baseline; the stage reached {st['rate'] / disk:.0%} of it)",
        flush=True,
    )
    tp = throughput(args.events)
    print(
        f"full pipeline (policy, serialize, spool, file sink): {tp['rate']:,.0f} events/s "
        f"({tp['rate'] / base:.0%} of baseline; "
        f"{args.events} events of {tp['avg_bytes']:.0f} bytes on average in {tp['seconds']:.1f} s)",
        flush=True,
    )
    print(
        "CPU per event (all threads; steadier on a busy machine): "
        + ", ".join(f"{k} {v:.1f} us" for k, v in CPU.items())
        + f"; stage/baseline CPU ratio {CPU['baseline'] / CPU['stage']:.0%}",
        flush=True,
    )
    if args.backlog:
        print(f"backlog of {args.backlog:,} events:", flush=True)
        result = backlog(args.backlog)
        print(f"  state database: {result.get('db_mb')} MB")


if __name__ == "__main__":
    main()
