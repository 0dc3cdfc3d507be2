"""Benchmark: Management Activity API (tenant emulator, its own process, TLS) -> the
``management_activity`` source -> normalizer -> pipeline -> file sink, through the Forwarder.

    .venv/bin/python bench/bench_sources.py [--records 200000] [--per-blob 200] [--no-baseline]
        [--set batch_records=100 ...] [--samples FILE]

1. The emulator starts in its own process (``python -m emulators.tenant``) with ``--records``
   DLP records over 5 days.
2. **Baseline** (same run, same records): every blob is downloaded once, and a plain
   ``orjson.loads`` of the blob plus ``orjson.dumps`` of each record is timed. Only the orjson
   work is timed. (The download also warms the emulator's compressed blob cache, 128 MB:
   with 200,000 records every blob is cached and the emulator serves them for ~10 us of CPU
   per record during the forwarder run; with 1,000,000 records it generates most blobs again,
   on the same CPU.)
3. **Forwarder**: a child process runs ``Forwarder.backfill`` of the source over the 5 days
   into the file sink (fsync per batch) and reports records/s (wall clock, everything
   included: HTTPS, msal token, listing, downloads, normalization, sensitive-value policy,
   dedup, SQLite spool, file sink) and its own peak RSS.

Targets: forwarder rate >= 20 % of the baseline rate; peak RSS <= 150 MB (run with
``--records 1000000`` for the memory target; the emulator cache then holds only part of the
blobs, so that run is also bounded by the emulator's generator).

Figures depend on the machine and its load: the emulator and the forwarder share the CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
DAYS = 5


def start_emulator(tmp: str, records: int, per_blob: int) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    info = os.path.join(tmp, "info.json")
    args = [
        sys.executable,
        "-m",
        "emulators.tenant",
        "--port",
        "0",
        "--state-dir",
        os.path.join(tmp, "emu"),
        "--info-file",
        info,
        "--audit-records",
        str(records),
        "--days",
        str(DAYS),
        "--records-per-blob",
        str(per_blob),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.exists(info) and os.path.getsize(info) > 0:
            try:
                return proc, json.loads(Path(info).read_text())
            except ValueError:
                pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the emulator did not start")


def baseline(d: dict[str, str]) -> tuple[int, float, int]:
    """Download every DLP.All blob once; time orjson loads + dumps per record. (records, seconds, bytes)"""
    client = httpx.Client(verify=ssl.create_default_context(cafile=d["ca_file"]), timeout=300)
    token = client.post(
        f"{d['url']}/{d['tenant_id']}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": d["client_id"],
            "client_secret": d["client_secret"],
            "scope": "https://manage.office.com/.default",
        },
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    params = {"PublisherIdentifier": d["publisher_id"]}
    root = f"{d['url']}/api/v1.0/{d['tenant_id']}/activity/feed"
    client.post(f"{root}/subscriptions/start", params={"contentType": "DLP.All", **params}, headers=headers)
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=DAYS + 1)
    uris: list[str] = []
    while start < now:
        end = min(start + dt.timedelta(hours=23), now)
        fmt = "%Y-%m-%dT%H:%M:%S"
        q = {"contentType": "DLP.All", "startTime": start.strftime(fmt), "endTime": end.strftime(fmt), **params}
        r = client.get(f"{root}/subscriptions/content", params=q, headers=headers)
        while True:
            uris += [b["contentUri"] for b in r.json()]
            nxt = r.headers.get("NextPageUri")
            if not nxt:
                break
            r = client.get(nxt, headers=headers)
        start = end
    records = 0
    size = 0
    spent = 0.0
    loads, dumps = orjson.loads, orjson.dumps
    for uri in uris:
        body = client.get(uri, params=params, headers=headers).content
        t0 = time.perf_counter()
        items = loads(body)
        for item in items:
            size += len(dumps(item))
        spent += time.perf_counter() - t0
        records += len(items)
    client.close()
    return records, spent, size


SAMPLES_ENV = "DLPFWD_BENCH_SAMPLES"


def start_sampler(path: str, interval: float = 2.0) -> Callable[[], None]:
    """Diagnostic (``--samples``): every ``interval`` seconds append a JSON line to ``path`` with
    the child's RSS, SQLite's heap (``sqlite3_memory_used``) and, per SQLite connection of the
    process, its page cache / prepared statements in KiB (``sqlite3_db_status``); at exit, the
    garbage collector's passes and seconds per generation. Reads CPython's connection object
    for the ``sqlite3 *`` handle: a diagnostic for this interpreter, not an interface. Returns
    the function that stops the sampling; call it before any connection is closed."""
    import ctypes
    import ctypes.util
    import gc
    import sqlite3
    import threading

    lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    cache_used, stmt_used = 1, 3  # SQLITE_DBSTATUS_CACHE_USED, SQLITE_DBSTATUS_STMT_USED
    gc_seconds, gc_passes, started = [0.0, 0.0, 0.0], [0, 0, 0], [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            gc_seconds[info["generation"]] += time.perf_counter() - started[0]
            gc_passes[info["generation"]] += 1

    def db_status(conn: sqlite3.Connection, op: int) -> int:
        handle = ctypes.c_void_p.from_address(id(conn) + 2 * ctypes.sizeof(ctypes.c_void_p)).value
        if not handle:  # closed
            return 0
        current, high = ctypes.c_int(), ctypes.c_int()
        lib.sqlite3_db_status(ctypes.c_void_p(handle), op, ctypes.byref(current), ctypes.byref(high), 0)
        return current.value >> 10

    def run() -> None:
        t0 = time.monotonic()
        with open(path, "a") as fh:
            while not stopped.is_set():
                conns = [o for o in gc.get_objects() if isinstance(o, sqlite3.Connection)]
                with open("/proc/self/statm") as f:
                    rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                sample = {
                    "t": round(time.monotonic() - t0, 1),
                    "rss_mb": round(rss / 2**20, 1),
                    "sqlite_heap_mb": round(lib.sqlite3_memory_used() / 2**20, 1),
                    "connections_cache_stmt_kib": [[db_status(c, cache_used), db_status(c, stmt_used)] for c in conns],
                }
                del conns
                fh.write(json.dumps(sample) + "\n")
                fh.flush()
                stopped.wait(interval)

    def at_exit() -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps({"gc_passes": gc_passes, "gc_seconds": [round(x, 3) for x in gc_seconds]}) + "\n")

    import atexit

    def stop() -> None:
        stopped.set()
        thread.join()

    stopped = threading.Event()
    thread = threading.Thread(target=run, name="bench-sampler", daemon=True)
    gc.callbacks.append(on_gc)
    atexit.register(at_exit)
    thread.start()
    return stop


def forwarder_child(info_path: str, out: str, extra: str = "") -> None:
    """Run in a child process: backfill everything into the file sink, print JSON figures.
    ``extra``: more TOML lines for the source (``--set``)."""
    sys.path.insert(0, str(ROOT))
    from forwarder.config import load_config
    from forwarder.plugins import PluginHost
    from forwarder.runtime import Forwarder

    d = json.loads(Path(info_path).read_text())
    samples = os.environ.get(SAMPLES_ENV)
    stop_sampler = start_sampler(samples) if samples else None
    text = f"""
[forwarder]
state_dir = "{out}/state"
[[sources]]
name = "o365"
type = "management_activity"
management_url = "{d["url"]}"
publisher_id = "{d["publisher_id"]}"
requests_per_minute = 0
resolve_sit_names = true
{extra}
[sources.auth]
tenant_id = "{d["tenant_id"]}"
client_id = "{d["client_id"]}"
client_secret = "{d["client_secret"]}"
authority = "{d["url"]}"
[sources.http]
ca_bundle = "{d["ca_file"]}"
[[sinks]]
name = "file"
type = "file"
path = "{out}/events.jsonl"
"""
    host = PluginHost().load()
    config = load_config(text, host)
    now = dt.datetime.now(dt.UTC)
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    with Forwarder(config, host) as fw:
        t0 = time.perf_counter()
        result = fw.backfill("o365", now - dt.timedelta(days=DAYS + 1), now)
        elapsed = time.perf_counter() - t0
        if stop_sampler is not None:
            stop_sampler()  # before the store closes its connections
    lines = 0
    for path in Path(out).glob("events*.jsonl"):  # the file sink rotates by size (events.1.jsonl, ...)
        with open(path, "rb") as fh:
            for _ in fh:
                lines += 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures = {
        "ok": result.ok,
        "errors": result.errors,
        "source": result.sources.get("o365", {}),
        "delivered": lines,
        "delivered_reported": result.delivered.get("file", 0),
        "seconds": elapsed,
        "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu_before,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--per-blob", type=int, default=200, help="records per content blob")
    parser.add_argument("--no-baseline", action="store_true", help="skip the orjson baseline (and cache warm-up)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="source setting, e.g. concurrency=2"
    )
    parser.add_argument(
        "--samples",
        metavar="FILE",
        help="diagnostic: the child appends RSS, SQLite heap and page caches every 2 s, and GC time, as JSON lines",
    )
    parser.add_argument("--child", nargs=3, metavar=("INFO", "OUT", "EXTRA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        forwarder_child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        proc, d = start_emulator(tmp, args.records, args.per_blob)
        try:
            print(f"emulator: {args.records:,} records, {args.per_blob} per blob, {d['url']}")
            base_rate = 0.0
            if not args.no_baseline:
                n, spent, size = baseline(d)
                base_rate = n / spent
                print(
                    f"baseline: orjson loads+dumps of {n:,} records ({size / n:,.0f} B each): "
                    f"{base_rate:,.0f} records/s"
                )
            out = os.path.join(tmp, "fwd")
            os.makedirs(out)
            env = dict(os.environ)
            if args.samples:
                env[SAMPLES_ENV] = os.path.abspath(args.samples)
            child = subprocess.run(
                [sys.executable, __file__, "--child", os.path.join(tmp, "info.json"), out, "\n".join(args.set)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=False,
                env=env,
            )
            if child.returncode != 0:
                print(child.stderr[-3000:])
                raise SystemExit("the forwarder run failed")
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            rate = figures["delivered"] / figures["seconds"]
            cpu_rate = figures["delivered"] / figures["cpu_seconds"]
            print(
                f"forwarder: {figures['delivered']:,} events in the file sink in {figures['seconds']:.1f} s: "
                f"{rate:,.0f} records/s wall, {cpu_rate:,.0f} records per CPU-second; "
                f"peak RSS {figures['peak_rss_mb']:.0f} MB; ok={figures['ok']} {figures['source']}"
            )
            if base_rate:
                print(
                    f"ratio: {100 * rate / base_rate:.1f} % of the orjson baseline by wall clock, "
                    f"{100 * cpu_rate / base_rate:.1f} % by CPU time (target >= 20 %)"
                )
            print(f"peak RSS target <= 150 MB: {'met' if figures['peak_rss_mb'] <= 150 else 'MISSED'}")
            print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
