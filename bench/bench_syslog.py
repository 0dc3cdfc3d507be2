"""Benchmark: events/s formatted and sent by the syslog sink over TCP and TLS to a real
rsyslogd, next to a plain orjson loads+dumps pass over the same events in the same run.

    .venv/bin/python bench/bench_syslog.py [--events 20000] [--format cef|leef|json]

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


def orjson_pass(payloads: list[bytes]) -> float:
    start = time.perf_counter()
    for p in payloads:
        orjson.dumps(orjson.loads(p))
    return len(payloads) / (time.perf_counter() - start)


def sink_pass(server: Rsyslog, transport: str, fmt: str, payloads: list[bytes], ca: Path, batch: int) -> float:
    port = server.tcp_port if transport == "tcp" else server.tls_port
    settings = {"host": "127.0.0.1", "port": port, "transport": transport, "format": fmt, "confirm_seconds": 0.0}
    if transport == "tls":
        settings["tls"] = {"ca_bundle": str(ca)}
    sink = make_sink("bench", **settings)
    sink.connect()
    delivered = 0
    start = time.perf_counter()
    for i in range(0, len(payloads), batch):
        entries = [Entry(i + n, p) for n, p in enumerate(payloads[i : i + batch])]
        out = sink.write_batch(entries)
        assert not out.rejected and not out.retry, out
        delivered += len(sink.poll_acks().delivered)
    while delivered < len(payloads):
        delivered += len(sink.poll_acks().delivered)
    elapsed = time.perf_counter() - start
    sink.close()
    return len(payloads) / elapsed


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
            base = max(orjson_pass(payloads) for _ in range(3))
            print(f"{args.events} events, {avg:.0f} bytes of JSON each, format {args.format}, batch {args.batch}")
            print(f"orjson loads+dumps: {base:12,.0f} events/s")
            for transport in ("tcp", "tls"):
                rate = max(sink_pass(server, transport, args.format, payloads, pki.ca, args.batch) for _ in range(2))
                share = rate / base
                print(f"syslog {transport:3} sink:    {rate:12,.0f} events/s  = {share:6.1%} of orjson (target 25 %)")
            for log in ("tcp", "tls"):
                wait_for(lambda: len(server.lines(log)) >= 2 * args.events, timeout=120, what=f"rsyslog to write {log}")  # noqa: B023
            print(f"rsyslog received {len(server.lines('tcp'))} (tcp) and {len(server.lines('tls'))} (tls) messages")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
