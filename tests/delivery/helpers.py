"""Test plugins and builders for the delivery tests.

* ``recording`` sink: appends one JSON line per delivered event (``id``, ``key``, spool id) to
  a file, fsynced before it reports the batch delivered; it can reject chosen event ids for
  good (``reject_ids``) or raise on them (``raise_ids``), controlled by a JSON file so a test
  can "fix" the sink between runs.
* ``http_recording`` sink: POSTs JSON lines to a URL; connection errors and 5xx are retried
  (Retry-After honoured), 2xx is delivered.
* ``listed`` source: ``count`` synthetic events in batches with a ``{"next": n}`` cursor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from forwarder.config import Config, ForwarderSettings, SinkConfig, SourceConfig
from forwarder.errors import NotConnected, RetriableError
from forwarder.hookspecs import hookimpl
from forwarder.options import SinkOptions, SourceOptions
from forwarder.plugins import PluginHost
from forwarder.schema import DetectedValue, DlpEvent, SensitiveType
from forwarder.sink import Entry, Outcome, Sink
from forwarder.source import NormalizeContext, RawRecord, Source, SourceBatch, WorkUnit


@dataclass
class RecordingSettings:
    path: str = ""
    control: str = ""  # JSON file: {"reject_ids": [...], "raise_ids": [...]}


class RecordingSink(Sink):
    settings_class = RecordingSettings
    max_batch_events = 1000

    def write_batch(self, entries: Sequence[Entry]) -> Outcome:
        control: dict[str, Any] = {}
        if self.settings.control and os.path.exists(self.settings.control):
            with open(self.settings.control) as fh:
                control = json.load(fh)
        reject = set(control.get("reject_ids", []))
        raise_ids = set(control.get("raise_ids", []))
        outcome = Outcome()
        lines = []
        for e in entries:
            data = e.data
            if data["id"] in raise_ids:
                raise TypeError(f"cannot format event {data['id']}")
            if data["id"] in reject:
                outcome.rejected[e.id] = f"event {data['id']} is not acceptable"
                continue
            lines.append(orjson.dumps({"id": data["id"], "key": data["idempotency_key"], "spool": e.id}) + b"\n")
            outcome.delivered.append(e.id)
        with open(self.settings.path, "ab") as fh:
            fh.write(b"".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        return outcome


@dataclass
class AckSettings:
    path: str = ""
    ack_after_polls: int = 2  # poll_acks calls before pending entries are acknowledged
    fatal: str = ""  # when set, write_batch reports this fatal configuration error


class AckingSink(Sink):
    """Reports every entry pending (like Splunk HEC with indexer acknowledgements) and
    acknowledges them a few ``poll_acks`` calls later; records what it acknowledged."""

    settings_class = AckSettings
    acknowledgements = True

    def __init__(self, name: str, settings: Any, context: Any) -> None:
        super().__init__(name, settings, context)
        self.waiting: list[tuple[int, str, int]] = []  # (spool id, event id, polls seen)
        self.sent = 0

    def write_batch(self, entries: Sequence[Entry]) -> Outcome:
        if self.settings.fatal:
            return Outcome.stop(entries, self.settings.fatal)
        self.sent += len(entries)
        self.waiting.extend((e.id, e.data["id"], 0) for e in entries)
        return Outcome.all_pending(entries)

    def poll_acks(self) -> Outcome:
        outcome = Outcome()
        still = []
        acked = []
        for sid, eid, polls in self.waiting:
            if polls + 1 >= self.settings.ack_after_polls:
                outcome.delivered.append(sid)
                acked.append(eid)
            else:
                still.append((sid, eid, polls + 1))
        self.waiting = still
        if acked:
            with open(self.settings.path, "ab") as fh:
                fh.write(b"".join(orjson.dumps({"id": i}) + b"\n" for i in acked))
        return outcome


@dataclass
class HttpSettings:
    url: str = ""


class HttpRecordingSink(Sink):
    settings_class = HttpSettings
    max_batch_events = 200

    def __init__(self, name: str, settings: Any, context: Any) -> None:
        super().__init__(name, settings, context)
        self.client = httpx.Client(timeout=5.0)

    def write_batch(self, entries: Sequence[Entry]) -> Outcome:
        body = b"".join(e.payload + b"\n" for e in entries)
        try:
            resp = self.client.post(self.settings.url, content=body)
        except httpx.ConnectError as exc:
            raise NotConnected(f"connection refused: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise RetriableError(type(exc).__name__) from None
        if resp.status_code >= 500:
            ra = resp.headers.get("Retry-After")
            return Outcome.all_retry(entries, f"HTTP {resp.status_code}", float(ra) if ra else None)
        return Outcome.all_delivered(entries)

    def close(self) -> None:
        self.client.close()


@dataclass
class ListedSettings:
    count: int = 100
    batch: int = 25
    bad_every: int = 0  # every n-th record is malformed (data None)
    payload_bytes: int = 200


class ListedSource(Source):
    settings_class = ListedSettings

    def __init__(self, name: str, settings: Any, context: Any) -> None:
        super().__init__(name, settings, context)
        self.tenant_id = "tenant-1"

    def poll(self, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        start = int((cursor or {}).get("next", 0))
        s = self.settings
        while start < s.count:
            end = min(s.count, start + s.batch)
            unit = f"unit-{start // (s.batch * 4)}"
            records = []
            for i in range(start, end):
                if s.bad_every and i % s.bad_every == s.bad_every - 1:
                    records.append(RawRecord("test", None, b"{not json " + str(i).encode(), unit))
                else:
                    records.append(RawRecord("test", make_record(i, s.payload_bytes), None, unit))
            yield SourceBatch(
                records=records,
                cursor={"next": end},
                units=[WorkUnit(unit, "test-unit", "fetched", listed=end - start, fetched=end - start)],
            )
            start = end

    def backfill(self, since: Any, until: Any, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        """The same records as ``poll``, tagged so a test can tell them apart, with progress."""
        for batch in self.poll(cursor):
            nxt = batch.cursor["next"] if batch.cursor else 0
            batch.progress = {"done": nxt, "total": self.settings.count}
            yield batch


def make_record(i: int, payload_bytes: int = 200, updated: str = "2026-11-01T00:00:00Z") -> dict[str, Any]:
    return {
        "Id": f"ev-{i:07d}",
        "LastUpdate": updated,
        "Severity": ["low", "medium", "high"][i % 3],
        "Workload": ["Exchange", "SharePoint", "Endpoint"][i % 3],
        "Detail": "x" * payload_bytes,
        "Value": "4111111111111111",
    }


def normalize_test(data: dict[str, Any], ctx: NormalizeContext) -> list[DlpEvent]:
    ev = DlpEvent(
        id=data["Id"],
        idempotency_key=f"{data['Id']}|{data['LastUpdate']}",
        kind="alert",
        severity=data.get("Severity", "unknown"),
        workload=data.get("Workload", ""),
        title=data.get("Detail", ""),
        updated_time=data["LastUpdate"],
        sensitive_types=[SensitiveType(name="Credit Card", detected_values=[DetectedValue("cc", data["Value"])])],
        raw=data,
    )
    return [ev]


class TestPlugin:
    """Registers the test plugins with a PluginHost."""

    @hookimpl
    def dlpfwd_register_sinks(self, register: Any) -> None:
        register("recording", RecordingSink)
        register("http_recording", HttpRecordingSink)
        register("acking", AckingSink)

    @hookimpl
    def dlpfwd_register_sources(self, register: Any) -> None:
        register("listed", ListedSource)

    @hookimpl
    def dlpfwd_register_normalizers(self, register: Any) -> None:
        register("test", normalize_test)


def make_host() -> PluginHost:
    host = PluginHost()
    host.register_object("delivery_tests", TestPlugin())
    host.collect(strict=True)
    return host


@dataclass
class Built:
    config: Config
    outputs: dict[str, str] = field(default_factory=dict)


def config(
    state_dir: str,
    sources: list[SourceConfig],
    sinks: list[SinkConfig],
    **forwarder: Any,
) -> Config:
    return Config(forwarder=ForwarderSettings(state_dir=state_dir, **forwarder), sources=sources, sinks=sinks)


def listed(name: str = "src", **settings: Any) -> SourceConfig:
    return SourceConfig(name, "listed", ListedSettings(**settings), SourceOptions(poll_interval=0.2))


def recording(name: str, path: str, control: str = "", options: SinkOptions | None = None) -> SinkConfig:
    opts = options or SinkOptions()
    opts.batch.max_wait = 0.0
    opts.retry.initial = 0.05
    opts.retry.maximum = 0.5
    opts.retry.breaker_cooldown = 0.5
    return SinkConfig(name, "recording", RecordingSettings(path, control), opts)


def read_ids(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, "rb") as fh:
        return [orjson.loads(line)["id"] for line in fh if line.strip()]


def sample_to_file_config(tmp: Path, events: Path, source_extra: str = "") -> Path:
    """Write ``tmp/dlpfwd.toml``: state in ``tmp/state``, a ``sample`` source ``demo`` reading
    ``events`` (plus the ``source_extra`` TOML lines) and a ``file`` sink ``archive`` writing
    ``tmp/out.jsonl``; return its path."""
    config = tmp / "dlpfwd.toml"
    config.write_text(
        f"""
[forwarder]
state_dir = "{tmp / "state"}"
plugins = ["sample", "file"]
[[sources]]
name = "demo"
type = "sample"
path = "{events}"
{source_extra}
[[sinks]]
name = "archive"
type = "file"
path = "{tmp / "out.jsonl"}"
"""
    )
    return config
