"""Benchmark: events/s formatted and sent by the syslog sink over TCP and TLS to a real
rsyslogd, next to a plain orjson loads+dumps pass over the same events in the same run.

    .venv/bin/python bench/bench_syslog.py [--events 20000] [--format cef|leef|json]

Wall-clock rates include waiting for rsyslogd (on the same, possibly busy, machine); the
per-CPU-second rates count only this process's CPU time and are steadier under load.
Each sink run decodes the spooled payload (Entry.data), formats, frames and writes every
event, then waits until all are confirmed delivered (TCP-acknowledged + the confirmation
window, set to 0 here so the figure is the sink's throughput, not the window). Target from
issue #7: at least 25 % of the orjson pass. Numbers depend on machine load; run it alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forwarder.schema import to_json  # noqa: E402
from forwarder.sink import Entry  # noqa: E402
from tests.syslog.certs import make_pki  # noqa: E402
from tests.syslog.helpers import make_sink, sample_event  # noqa: E402
from tests.syslog.rsyslog import Rsyslog, wait_for  # noqa: E402


def orjson_pass(payloads: list[bytes]) -> tuple[float, float]:
    """(events/s by wall clock, events per CPU-second of this process)."""
    start, cpu = time.perf_counter(), time.process_time()
    for p in payloads:
        orjson.dumps(orjson.loads(p))
    return len(payloads) / (time.perf_counter() - start), len(payloads) / (time.process_time() - cpu)


def sink_pass(
    server: Rsyslog, transport: str, fmt: str, payloads: list[bytes], ca: Path, batch: int
) -> tuple[float, float]:
    port = server.tcp_port if transport == "tcp" else server.tls_port
    settings = {"host": "127.0.0.1", "port": port, "transport": transport, "format": fmt, "confirm_seconds": 0.0}
    if transport == "tls":
        settings["tls"] = {"ca_bundle": str(ca)}
    sink = make_sink("bench", **settings)
    sink.connect()
    delivered = 0
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(payloads), batch):
        entries = [Entry(i + n, p) for n, p in enumerate(payloads[i : i + batch])]
        out = sink.write_batch(entries)
        assert not out.rejected and not out.retry, out
        delivered += len(sink.poll_acks().delivered)
    while delivered < len(payloads):
        delivered += len(sink.poll_acks().delivered)
    elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
    sink.close()
    return len(payloads) / elapsed, len(payloads) / cpu_used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--format", default="cef", choices=("cef", "leef", "json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    payloads = [to_json(sample_event(i, run="bench")) for i in range(args.events)]
    avg = sum(map(len, payloads)) / len(payloads)
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_pki(Path(tmp) / "pki")
        server = Rsyslog(Path(tmp) / "rsyslog", pki.ca, pki.server_cert, pki.server_key, buffered=True)
        server.start()
        try:
            runs = [orjson_pass(payloads) for _ in range(3)]
            base, base_cpu = max(r[0] for r in runs), max(r[1] for r in runs)
            print(f"{args.events} events, {avg:.0f} bytes of JSON each, format {args.format}, batch {args.batch}")
            print("                    wall events/s  share | per CPU-second  share   (target: share >= 25 %)")
            print(f"orjson loads+dumps: {base:14,.0f}        | {base_cpu:14,.0f}")
            for transport in ("tcp", "tls"):
                runs = [sink_pass(server, transport, args.format, payloads, pki.ca, args.batch) for _ in range(2)]
                rate, cpu_rate = max(r[0] for r in runs), max(r[1] for r in runs)
                wall = f"{rate:14,.0f} {rate / base:6.1%}"
                print(f"syslog {transport:3} sink:    {wall} | {cpu_rate:14,.0f} {cpu_rate / base_cpu:6.1%}")
            for log in ("tcp", "tls"):
                wait_for(lambda: len(server.lines(log)) >= 2 * args.events, timeout=120, what=f"rsyslog to write {log}")  # noqa: B023
            print(f"rsyslog received {len(server.lines('tcp'))} (tcp) and {len(server.lines('tls'))} (tls) messages")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
