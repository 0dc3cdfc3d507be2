"""Throughput of the ITSM sinks against in-process receivers over TLS.

* servicenow: N new incidents (lookup GET + POST each), then N updates of them (PATCH of the
  changed fields + a work note), then N unchanged re-deliveries (no request at all);
* webhook: N events in event mode (one signed POST each) and in array mode (batches of 500).

    .venv/bin/python bench/bench_itsm.py [--events 500]

The emulator runs in the same process and shares the CPU with the sink, so these numbers are
a floor for the sink's own cost; a real instance is bounded by its rate-limit rules (often a
few thousand requests per hour), which is why ITSM sinks should get incidents and alerts only.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emulators.httpd import App, EmulatorServer, Request, Response  # noqa: E402
from emulators.servicenow.app import ServiceNowApp  # noqa: E402
from forwarder.schema import DlpEvent, Links, Related, to_json  # noqa: E402
from forwarder.settings import build  # noqa: E402
from forwarder.sink import Entry, SinkContext  # noqa: E402
from sinks.servicenow.settings import ServiceNowSettings  # noqa: E402
from sinks.servicenow.sink import ServiceNowSink  # noqa: E402
from sinks.webhook.settings import WebhookSettings  # noqa: E402
from sinks.webhook.sink import WebhookSink  # noqa: E402


class KV(dict[str, object]):
    def put(self, key: str, value: object) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


def events(n: int, severity: str, updated: str) -> list[Entry]:
    out = []
    for i in range(n):
        e = DlpEvent(
            id=f"incident:{i}",
            idempotency_key=f"incident:{i}@{updated}",
            kind="incident",
            severity=severity,
            updated_time=updated,
            tenant_id="t",
            title=f"DLP incident {i}",
            links=Links(incident=f"https://security.microsoft.com/incidents/{i}"),
            related=Related(incident_ids=[str(i)]),
        )
        out.append(Entry(i + 1, to_json(e)))
    return out


def timed(label: str, n: int, fn) -> None:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<42} {n:>6} events {elapsed:7.2f} s {n / elapsed:9.0f} events/s")


def servicenow(n: int, cert_dir: str) -> None:
    app = ServiceNowApp(users={"b": "b"})
    with EmulatorServer(app, cert_dir=cert_dir) as server:
        problems: list[str] = []
        data = {"instance_url": server.url, "username": "b", "password": "b", "http": {"ca_bundle": server.ca_file}}
        settings = build(ServiceNowSettings, data, "sinks.b", problems)
        sink = ServiceNowSink("b", settings, SinkContext("b", logging.getLogger("bench"), state=KV()))

        def run(entries: list[Entry]) -> None:
            for i in range(0, len(entries), sink.max_batch_events):
                out = sink.write_batch(entries[i : i + sink.max_batch_events])
                assert len(out.delivered) == len(entries[i : i + sink.max_batch_events]), out

        timed("servicenow create (GET + POST)", n, lambda: run(events(n, "high", "2026-01-01T00:00:00Z")))
        timed("servicenow update (PATCH + work note)", n, lambda: run(events(n, "low", "2026-01-02T00:00:00Z")))
        timed("servicenow unchanged (no request)", n, lambda: run(events(n, "low", "2026-01-02T00:00:00Z")))
        assert len(app.table("incident")) == n
        sink.close()


class Sink200(App):
    def __init__(self) -> None:
        super().__init__()
        self.route("POST", "/hook", lambda r: Response.empty(204))

    def handle(self, request: Request) -> Response:
        return super().handle(request)


def webhook(n: int, cert_dir: str) -> None:
    with EmulatorServer(Sink200(), cert_dir=cert_dir) as server:
        for mode in ("event", "array"):
            problems: list[str] = []
            data = {"url": f"{server.url}/hook", "secret": "k", "mode": mode, "http": {"ca_bundle": server.ca_file}}
            settings = build(WebhookSettings, data, "sinks.w", problems)
            sink = WebhookSink("w", settings, SinkContext("w", logging.getLogger("bench")))
            entries = events(n, "high", "2026-01-01T00:00:00Z")

            def run(sink: WebhookSink = sink, entries: list[Entry] = entries) -> None:
                for i in range(0, len(entries), 500):
                    assert len(sink.write_batch(entries[i : i + 500]).delivered) == len(entries[i : i + 500])

            timed(f"webhook {mode} mode (signed POST{'s' if mode == 'event' else ' of 500'})", n, run)
            sink.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        servicenow(args.events, tmp)
        webhook(args.events, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
