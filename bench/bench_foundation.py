"""Throughput of the foundation's hot paths: schema (de)serialization, the sensitive-value
policy, the OCSF formatter and the file sink. Run: ``.venv/bin/python bench/bench_foundation.py``.
Numbers depend on machine load; compare runs on the same machine only."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from forwarder.config import PolicySettings
from forwarder.ocsf import to_ocsf
from forwarder.policy import SensitiveValuePolicy
from forwarder.schema import from_json, to_dict, to_json
from forwarder.settings import Secret
from forwarder.sink import Entry, SinkContext
from forwarder.testing.events import rule_match_exchange, sample_events
from sinks.file import FileSettings, FileSink

N = 20_000


def rate(label: str, n: int, fn: Callable[[], None]) -> None:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {n / elapsed:>12,.0f} events/s")


def main() -> None:
    events = [sample_events()[i % 5] for i in range(N)]
    payloads = [to_json(e) for e in events]
    rate("to_json", N, lambda: [to_json(e) for e in events])
    rate("from_json", N, lambda: [from_json(p) for p in payloads])
    dicts = [to_dict(e) for e in events]
    rate("to_ocsf", N, lambda: [to_ocsf(d) for d in dicts])
    for mode in ("drop", "mask", "hash"):
        policy = SensitiveValuePolicy(PolicySettings(mode, Secret("bench-key") if mode == "hash" else None))
        fresh = [rule_match_exchange() for _ in range(N)]
        rate(f"policy {mode} (record with detected values)", N, lambda p=policy, f=fresh: [p.apply(e) for e in f])
    for layout, gz, fsync in (("native", False, True), ("native", False, False), ("ocsf", True, True)):
        with tempfile.TemporaryDirectory() as tmp:
            settings = FileSettings(path=str(Path(tmp) / "b.jsonl"), layout=layout, gzip=gz, fsync=fsync)
            sink = FileSink("bench", settings, SinkContext("bench", logging.getLogger("bench")))
            sink.connect()
            batches = [[Entry(i + j, payloads[i + j]) for j in range(500)] for i in range(0, N, 500)]

            def write(s: FileSink = sink, b: list[list[Entry]] = batches) -> None:
                for batch in b:
                    s.write_batch(batch)

            rate(f"file sink {layout} gzip={gz} fsync={fsync} (500/batch)", N, write)
            sink.close()


if __name__ == "__main__":
    main()
