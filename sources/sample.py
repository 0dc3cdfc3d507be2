"""The ``sample`` source: replays a JSON Lines file of raw records. For demos, tests and
crash drills; it needs no Microsoft tenant.

Each line is ``{"kind": "<record kind>", "data": {...}}``; a line that is a JSON object
without ``kind``/``data`` is taken as ``{"kind": default_kind, "data": <the line>}``. A line
that is not JSON becomes a record with ``data = None`` and its bytes in ``raw`` (the host
quarantines it). The cursor is ``{"offset": <byte offset after the last line read>, "line": n}``,
so a restart resumes exactly after the last committed batch. Ledger unit: one per batch,
``<path>@<byte offset of the batch's first line>``; every record of the batch carries it. A trailing line without a
newline is not read until it is complete (a writer may still be appending).

It also registers a normalizer for the ``sample`` kind: ``data`` is an already-normalized
event (:func:`forwarder.schema.from_dict` shape); missing fields take their defaults and the
source instance, source type, tenant and ingest time are filled in from the context.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from forwarder.errors import FatalError, MalformedRecord
from forwarder.hookspecs import hookimpl
from forwarder.schema import DlpEvent, from_dict, iso_utc, parse_time
from forwarder.settings import setting
from forwarder.sink import Health
from forwarder.source import NormalizeContext, RawRecord, Source, SourceBatch, WorkUnit

SAMPLE_KIND = "sample"


@dataclass
class SampleSettings:
    """Settings of the ``sample`` source."""

    path: str = setting(doc='JSON Lines file of records: {"kind": ..., "data": {...}} per line')
    default_kind: str = setting(SAMPLE_KIND, doc="record kind of lines that are bare JSON objects")
    batch_size: int = setting(500, doc="records per batch", minimum=1)
    tenant_id: str = setting("", doc="tenant id stamped on events that have none")


class SampleSource(Source):
    """Reads ``settings.path`` from the cursor's byte offset; see the module docstring."""

    settings_class = SampleSettings

    def __init__(self, name: str, settings: SampleSettings, context: Any) -> None:
        super().__init__(name, settings, context)
        self.tenant_id = settings.tenant_id

    def connect(self) -> None:
        if not os.path.isfile(self.settings.path):
            raise FatalError(f"sample file {self.settings.path} does not exist")

    def poll(self, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        yield from self._read(cursor, None)

    def backfill(self, since: dt.datetime, until: dt.datetime, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        """Replays the records whose ``data.event_time`` (or ``CreationTime``) lies in [since, until)."""
        yield from self._read(cursor, (since, until))

    def health(self) -> Health:
        path = self.settings.path
        return Health().add("file readable", os.access(path, os.R_OK), path)

    # ------------------------------------------------------------------ reading

    def _read(
        self, cursor: dict[str, Any] | None, window: tuple[dt.datetime, dt.datetime] | None
    ) -> Iterator[SourceBatch]:
        offset = int((cursor or {}).get("offset", 0))
        line_no = int((cursor or {}).get("line", 0))
        try:
            size = os.path.getsize(self.settings.path)
        except OSError as exc:
            raise FatalError(f"sample file {self.settings.path}: {exc.strerror}") from None
        if offset > size:  # the file was replaced by a shorter one: start over
            offset, line_no = 0, 0
        records: list[RawRecord] = []
        unit = f"{self.settings.path}@{offset}"  # the batch's ledger unit: where it starts
        with open(self.settings.path, "rb") as fh:
            fh.seek(offset)
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # incomplete last line: read it when it is complete
                offset += len(line)
                line_no += 1
                stripped = line.strip()
                if not stripped:
                    continue
                record = self._record(stripped, unit)
                if window is not None and not _in_window(record, window):
                    continue
                records.append(record)
                if len(records) >= self.settings.batch_size:
                    yield self._batch(records, unit, offset, line_no)
                    records = []
                    unit = f"{self.settings.path}@{offset}"
        if records or (cursor or {}).get("offset", 0) != offset:
            yield self._batch(records, unit, offset, line_no)

    def _record(self, line: bytes, unit: str) -> RawRecord:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return RawRecord(kind=self.settings.default_kind, data=None, raw=line, unit=unit)
        if not isinstance(obj, dict):
            return RawRecord(kind=self.settings.default_kind, data=None, raw=line, unit=unit)
        if isinstance(obj.get("kind"), str) and isinstance(obj.get("data"), dict):
            return RawRecord(kind=obj["kind"], data=obj["data"], raw=None, unit=unit)
        return RawRecord(kind=self.settings.default_kind, data=obj, raw=None, unit=unit)

    def _batch(self, records: list[RawRecord], unit_id: str, offset: int, line_no: int) -> SourceBatch:
        self.context.count("records_read", len(records))
        unit = WorkUnit(
            id=unit_id,
            kind="sample-lines",
            status="fetched",
            listed=len(records),
            fetched=len(records),
            parsed=sum(1 for r in records if r.data is not None),
        )
        return SourceBatch(
            records=records,
            cursor={"offset": offset, "line": line_no},
            units=[unit],
            progress={"line": line_no},
        )


def _in_window(record: RawRecord, window: tuple[dt.datetime, dt.datetime]) -> bool:
    data = record.data or {}
    text = data.get("event_time") or data.get("CreationTime") or data.get("createdDateTime") or ""
    when = parse_time(text) if isinstance(text, str) else None
    return when is not None and window[0] <= when < window[1]


def normalize_sample(data: dict[str, Any], ctx: NormalizeContext) -> list[DlpEvent]:
    """Build a DlpEvent from an already-normalized dict; defaults fill the gaps."""
    if not isinstance(data, dict):
        raise MalformedRecord("sample record is not a JSON object")
    event = from_dict(data)
    if not event.id:
        raise MalformedRecord("sample record has no id")
    event.source = ctx.source
    event.source_type = ctx.source_type or "sample"
    event.tenant_id = event.tenant_id or ctx.tenant_id
    event.ingest_time = ctx.ingest_time or iso_utc(dt.datetime.now(dt.UTC))
    event.event_time = iso_utc(event.event_time) or event.ingest_time
    event.updated_time = iso_utc(event.updated_time) or event.event_time
    event.kind = event.kind or "audit"
    event.idempotency_key = event.idempotency_key or f"{event.id}@{event.updated_time}"
    return [event]


@hookimpl
def dlpfwd_register_sources(register: Callable[[str, type], None]) -> None:
    register("sample", SampleSource)


@hookimpl
def dlpfwd_register_normalizers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register(SAMPLE_KIND, normalize_sample)
