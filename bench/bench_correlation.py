"""Benchmark: normalization + sensitive-value policy, with and without the correlation stage
(index + built-in enricher), against an index already holding ``--alerts`` Defender alerts.

    .venv/bin/python bench/bench_correlation.py [--alerts 100000] [--events 20000] [--batch 500]

1. The tenant emulator's generator (in process) makes ``--events`` DLP audit records and the
   Defender alerts of its data set; the alerts are normalized with the real Graph normalizer
   and cloned (new ids, times spread over --alert-days up to the end of the records, same users and devices) up to
   ``--alerts``, then indexed in batches (timed as "index fill").
2. **Baseline**: the records, batch by batch, through the real Management Activity normalizer
   and the sensitive-value policy. **Enriched**: the same plus ``CorrelationStage.process``
   (index upserts, link search for same user/file/device/incident, enrichment), in a fresh
   copy of the filled index. Both report events/s (CPU-bound, single thread).
3. Memory: peak RSS of this process, and the index file size.

Target (issue #10): enriched throughput >= 70 % of the baseline; memory bounded (the index is
on disk; RSS does not grow with it). Figures depend on the machine and its load (2 shared
cores): run it a few times.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import gc
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emulators.tenant.config import EmulatorConfig  # noqa: E402
from emulators.tenant.generator import Dataset  # noqa: E402
from forwarder.config import PolicySettings  # noqa: E402
from forwarder.correlation.settings import CorrelationSettings  # noqa: E402
from forwarder.correlation.stage import CorrelationStage  # noqa: E402
from forwarder.pipeline import relax_gc  # noqa: E402
from forwarder.policy import SensitiveValuePolicy  # noqa: E402
from forwarder.schema import DlpEvent, iso_utc  # noqa: E402
from forwarder.source import NormalizeContext  # noqa: E402
from sources.normalize.graph import normalize_alert  # noqa: E402
from sources.normalize.management_activity import normalize_audit_record  # noqa: E402


class GcClock:
    """Seconds spent in the garbage collector (gc.callbacks), to tell it from the stage's own cost."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._start


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_alerts(
    ds: Dataset, ctx: NormalizeContext, count: int, days: float = 5.0, chunk: int = 1000
) -> Iterator[list[DlpEvent]]:
    """``count`` Defender alerts in chunks (never all in memory: RSS measures the index, not the input).

    Clones keep their template's user, device and incident; a file or message gets a name,
    hashes and id of its own per clone (the generator's 60 file names repeated over 100,000
    alerts would link each DLP file to hundreds of alerts, which no real tenant does)."""
    templates = [normalize_alert(ds.alert(j), ctx)[0] for j in range(ds.alert_count) if ds.is_defender_alert(j)]
    t0 = ds.anchor - days * 86400.0
    for start in range(0, count, chunk):
        out = []
        for n in range(start, min(count, start + chunk)):
            ev = copy.copy(templates[n % len(templates)])
            ev.id = f"alert:bench{n:07d}"
            ev.idempotency_key = ev.id
            ev.event_time = iso_utc(dt.datetime.fromtimestamp(t0 + (n / count) * days * 86400.0, dt.UTC))
            ev.enrichment = {}
            obj = ev.object
            if obj.name or obj.sha256 or obj.message_id:
                ev.object = dataclasses.replace(
                    obj,
                    name=f"{n}-{obj.name}" if obj.name else "",
                    sha1=f"{n:040x}" if obj.sha1 else "",
                    sha256=f"{n:064x}" if obj.sha256 else "",
                    message_id=f"<bench{n}@example.com>" if obj.message_id else "",
                )
            out.append(ev)
        yield out


def normalize_all(records: list[dict[str, Any]], ctx: NormalizeContext, policy: Any) -> list[DlpEvent]:
    events = []
    for rec in records:
        for ev in normalize_audit_record(rec, ctx):
            policy(ev)
            events.append(ev)
    return events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alerts", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--users", type=int, default=1000, help="users of the data set")
    ap.add_argument("--alert-days", type=float, default=30.0, help="days the indexed alerts span (records: last 5)")
    ap.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() the generated records (like a runtime's start-up heap)"
    )
    args = ap.parse_args()

    relax_gc()  # the garbage collector as a Pipeline sets it, for both runs (the stage runs inside one)
    gc_clock = GcClock()
    anchor = 1_790_000_000.0  # fixed: the same data set every run
    ds = Dataset(EmulatorConfig(audit_records=args.events, days=5, users=args.users, alert_every=10), anchor, "t-bench")
    ctx = NormalizeContext("bench", "management_activity", "t-bench", {}, iso_utc(dt.datetime.now(dt.UTC)))
    # the records wait as JSON bytes, one array per batch, decoded (untimed) just before their batch:
    # a runtime holds one batch at a time, and 20,000 live record dicts would make every garbage
    # collection of the timed part scan them (it penalised the allocation-heavier enriched run)
    batches = [
        orjson.dumps([ds.record(i) for i in range(start, min(args.events, start + args.batch))])
        for start in range(0, args.events, args.batch)
    ]
    policy = SensitiveValuePolicy(PolicySettings()).apply
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    print(
        f"{args.events} DLP records over 5 days, {args.users} users; index of {args.alerts} Defender alerts over "
        f"{args.alert_days:g} days; batches of {args.batch}"
    )
    print(f"peak RSS after generating the records: {rss_mb():.0f} MB; load average {os.getloadavg()[0]:.2f}")

    tmp = tempfile.mkdtemp(prefix="bench-corr-")
    try:
        settings = CorrelationSettings(enabled=True)
        filled = os.path.join(tmp, "filled")
        stage = CorrelationStage(filled, settings)
        t = time.perf_counter()
        for chunk in make_alerts(ds, ctx, args.alerts, args.alert_days):
            stage.process([(ev, "u") for ev in chunk], "bench", "graph_security", "t-bench")
        fill = time.perf_counter() - t
        stats = stage.stats()
        stage.close()
        del stage  # its caches would stay on the heap (and in every garbage collection) of both runs
        print(
            f"index fill: {args.alerts / fill:,.0f} alerts/s; {stats['items']} items, {stats['keys']} keys, "
            f"{stats['bytes'] / 1e6:.1f} MB on disk"
        )

        rates: dict[str, list[float]] = {}
        for mode in ("baseline", "enriched", "baseline", "enriched"):
            run_dir = os.path.join(tmp, "run")
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.copytree(filled, run_dir)
            run: CorrelationStage | None = CorrelationStage(run_dir, settings) if mode == "enriched" else None
            linked = 0
            cpu = elapsed = 0.0
            gc_before = gc_clock.total
            for blob in batches:
                records = orjson.loads(blob)
                c, t = time.process_time(), time.perf_counter()
                events = normalize_all(records, ctx, policy)
                if run is not None:
                    out, _, _ = run.process([(ev, "u") for ev in events], "bench", "management_activity", "t-bench")
                cpu += time.process_time() - c
                elapsed += time.perf_counter() - t
                if run is not None:
                    linked += sum(1 for ev, _ in out if ev.enrichment.get("correlation", {}).get("related_alerts"))
                    del out  # a runtime spools the batch and lets go of it, as the baseline does of events
                del records, events
            cpu_rate = args.events / cpu
            rate = args.events / elapsed
            rates.setdefault(mode, []).append(cpu_rate)
            extra = f", {linked} events with related alerts" if run is not None else ""
            extra += f"; GC {1e6 * (gc_clock.total - gc_before) / args.events:.0f} us/event"
            print(
                f"{mode:9s}: {rate:,.0f} events/s wall, {cpu_rate:,.0f} per CPU-second{extra}; "
                f"peak RSS {rss_mb():.0f} MB"
            )
            if run is not None:
                run.close()
        base, enr = max(rates["baseline"]), max(rates["enriched"])
        print(f"enriched / baseline (per CPU-second, best of 2 each): {enr / base:.0%} (target >= 70 %)")
        print(f"load average {os.getloadavg()[0]:.2f} (2 shared cores: compare ratios, not rates)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
