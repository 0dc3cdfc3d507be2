"""Benchmark: events/s from the splunk_hec sink into the HEC emulator (its own process), with
gzip and indexer acknowledgement on, against a plain orjson loads+dumps pass over the same
events measured in the same run.

    .venv/bin/python bench/bench_hec.py [--events 20000] [--batch 500]

Target (issue #6): HEC throughput >= 25 % of the orjson pass. Exit code 1 when missed.
"""

from __future__ import annotations

import argparse
import logging
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forwarder.schema import (  # noqa: E402
    DetectedValue,
    DlpEvent,
    Identity,
    ObjectRef,
    PolicyMatch,
    RuleMatch,
    SensitiveType,
    to_json,
)
from forwarder.settings import HttpSettings, Secret  # noqa: E402
from forwarder.sink import Entry, SinkContext  # noqa: E402
from sinks.splunk_hec.sink import HecSink, SplunkHecSettings  # noqa: E402

TOKEN = "00000000-0000-4000-8000-000000000000"


def make_events(n: int) -> list[bytes]:
    kinds = ["audit", "audit", "audit", "alert", "incident"]
    payloads = []
    for i in range(n):
        event = DlpEvent(
            id=f"rec-{i}",
            idempotency_key=f"rec-{i}@2026-11-23T10:00:{i % 60:02d}Z",
            kind=kinds[i % len(kinds)],
            operation="DlpRuleMatch",
            event_time=f"2026-11-23T10:{i % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
            updated_time=f"2026-11-23T10:{i % 60:02d}:{i % 60:02d}Z",
            ingest_time="2026-11-23T10:05:00Z",
            tenant_id="4a1b6c9e-0000-4000-8000-contoso00001",
            source="contoso-audit",
            source_type="management_activity",
            record_type=13,
            workload=["Exchange", "SharePoint", "Endpoint", "MicrosoftTeams"][i % 4],
            severity=["low", "medium", "high"][i % 3],
            title=f"DLP policy match {i}" if i % 5 else "",
            policies=[
                PolicyMatch(
                    id=f"pol-{i % 7}",
                    name=f"Financial data policy {i % 7}",
                    rules=[RuleMatch(id=f"rule-{i % 11}", name="Block external sharing", actions=["BlockAccess"])],
                )
            ],
            user=Identity(upn=f"user{i % 100}@contoso.com", object_id=f"oid-{i % 100}"),
            sender=f"user{i % 100}@contoso.com",
            recipients=[f"partner{i % 13}@fabrikam.com"],
            object=ObjectRef(type="email", subject=f"Quarterly numbers {i}", message_id=f"<m{i}@contoso>"),
            sensitive_types=[
                SensitiveType(
                    id="50842eb7-edc8-4019-85dd-5a5c1f2bb085",
                    name="Credit Card Number",
                    count=3,
                    confidence=85,
                    detected_values=[DetectedValue(name="Credit Card Number", value="")],
                ),
                SensitiveType(id="a44669fe-0d48-453d-a9b1-2cc83f2cba77", name="U.S. Social Security Number", count=1),
            ],
        )
        payloads.append(to_json(event))
    return payloads


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def orjson_rate(payloads: list[bytes], rounds: int = 3) -> float:
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for p in payloads:
            orjson.dumps(orjson.loads(p))
        best = max(best, len(payloads) / (time.perf_counter() - start))
    return best


def start_emulator(cert_dir: str) -> tuple[subprocess.Popen[str], str, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "emulators.hec", "--port", "0", "--ack", "--token", TOKEN, "--state-dir", cert_dir],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise SystemExit(f"HEC emulator did not start: {line!r}")
    fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
    url = line.split("listening on ", 1)[1].split()[0]
    return process, url, fields["ca"]


def control(url: str, ca: str, what: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call the emulator's control API (``/_emulator/...``)."""
    with httpx.Client(verify=ssl.create_default_context(cafile=ca)) as client:
        if body is None:
            response = client.get(f"{url}/_emulator/{what}")
        else:
            response = client.post(f"{url}/_emulator/{what}", json=body)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def hec_rate(payloads: list[bytes], batch: int, url: str, ca: str, in_flight: int = 2) -> tuple[float, int, int]:
    settings = SplunkHecSettings(
        url=url,
        token=Secret(TOKEN),
        ack=True,
        gzip=True,
        ack_poll_interval=0.05,
        http=HttpSettings(ca_bundle=ca),
        max_request_bytes=4_000_000,
        max_in_flight=in_flight,
    )
    sink = HecSink("bench", settings, SinkContext("bench", logging.getLogger("bench")))
    delivered = 0
    duplicates = 0
    start = time.perf_counter()
    sink.connect()
    for i in range(0, len(payloads), batch):
        # like the host: a batch's entries are built from the spool rows, then dropped
        out = sink.write_batch([Entry(i + j + 1, p) for j, p in enumerate(payloads[i : i + batch])])
        assert not out.fatal and not out.rejected and not out.retry, out
        delivered += len(out.delivered)
        # like the host: poll between writes while entries are pending (the sink itself spaces
        # the requests by ack_poll_interval)
        acks = sink.poll_acks()
        delivered += len(acks.delivered)
        duplicates += acks.duplicates_possible
    deadline = time.monotonic() + 60
    while delivered < len(payloads) and time.monotonic() < deadline:
        acks = sink.poll_acks()
        delivered += len(acks.delivered)
        duplicates += acks.duplicates_possible
        if delivered < len(payloads):
            time.sleep(0.01)  # the host waits between polls too
    elapsed = time.perf_counter() - start
    sink.close()
    return delivered / elapsed, delivered, duplicates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500, help="events per write_batch (the host's default)")
    parser.add_argument("--in-flight", type=int, default=2, help="the sink's max_in_flight (0 = synchronous)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of (orjson pass, HEC pass); the median counts")
    args = parser.parse_args()
    payloads = make_events(args.events)
    size = sum(len(p) for p in payloads) / len(payloads)
    n = len(payloads)
    print(f"events: {n}, mean payload {size:.0f} bytes, batch {args.batch}, in flight {args.in_flight}")
    rounds: list[tuple[float, float, float, int, int]] = []
    sink_cpu = emulator_cpu = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        process, url, ca = start_emulator(tmp)
        try:
            control(url, ca, "faults", {"record": False})  # count only: the bench is not about memory
            for i in range(args.rounds):
                # baseline and HEC pass back to back in each round, so both see the same machine load
                baseline = orjson_rate(payloads, 1)
                before_emulator, before_sink = cpu_seconds(process.pid), time.process_time()
                rate, delivered, duplicates = hec_rate(payloads, args.batch, url, ca, args.in_flight)
                sink_cpu += time.process_time() - before_sink
                emulator_cpu += cpu_seconds(process.pid) - before_emulator
                rounds.append((rate / baseline, rate, baseline, delivered, duplicates))
                print(
                    f"round {i + 1}: orjson loads+dumps {baseline:,.0f} events/s; splunk_hec (gzip, acks, TLS, "
                    f"emulator in its own process) {rate:,.0f} events/s; ratio {rate / baseline:.1%}; "
                    f"delivered {delivered}/{n}, duplicates possible {duplicates}"
                )
            indexed = control(url, ca, "stats")["indexed"]
        finally:
            process.terminate()
            process.wait(timeout=10)
    ratios = sorted(r[0] for r in rounds)
    median = ratios[len(ratios) // 2]
    print(f"emulator indexed {indexed} events in all (expected {args.rounds * n})")
    print(
        f"CPU per event: sink {sink_cpu / args.rounds / n * 1e6:.1f} us, "
        f"emulator {emulator_cpu / args.rounds / n * 1e6:.1f} us"
    )
    print(f"ratio: median {median:.1%}, best {ratios[-1]:.1%} (target >= 25%)")
    complete = all(r[3] == n for r in rounds) and indexed == args.rounds * n
    return 0 if median >= 0.25 and complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
