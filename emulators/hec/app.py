"""A Splunk HTTP Event Collector emulator, for tests and for dry runs.

It behaves as HEC is documented to (``docs/splunk.md`` lists what is modelled):

* ``POST /services/collector``, ``/services/collector/event`` (``/1.0``): concatenated JSON
  envelopes (newline separated or not), optionally gzip (``Content-Encoding: gzip``; other
  encodings -> 415). Per object, in order: a JSON object (else code 6), ``event`` present (12)
  and not blank (13), ``index`` allowed for the token (7), ``fields`` flat (15). On the first
  bad object *n* the objects before it are indexed and the answer is 400 with
  ``invalid-event-number`` = n. An empty body is code 5. Over ``max_content_length``
  (compressed or decompressed) -> 413.
* Auth: ``Authorization: Splunk <token>`` (or HTTP Basic with the token as password). Missing
  -> 401 code 2; malformed -> 401 code 3; unknown -> 403 code 4; disabled -> 403 code 1;
  ``?token=`` -> 400 code 16 unless query-string auth is allowed.
* Tokens with ``use_ack``: a channel is required (``X-Splunk-Request-Channel`` or
  ``?channel=``): missing -> 400 code 10, not a GUID -> 400 code 11. Accepted requests answer
  ``{"text":"Success","code":0,"ackId":n}`` with per-channel ids from 0; an ack turns true
  ``ack_delay`` seconds later (never with ``drop_acks``) and is forgotten once reported true.
* ``POST /services/collector/ack``: ``{"acks":[ids]}`` -> ``{"acks":{"id":bool}}``; code 14
  when the token has no ack; code 11 on a channel the server does not know (never used, or
  dropped by :meth:`HecApp.forget_channels`, standing for idle expiry or a restart).
* ``GET /services/collector/health``: code 17, or 503 code 18 while busy.
* Faults: ``busy_next`` (the next N event requests answer 503 code 9), ``busy_rate``
  (probability), ``indexer_delay`` (seconds before answering), ``capacity_warning`` (24 or
  25: accepted requests answer HTTP 200 with that "approaching capacity" code),
  ``refuse_containing`` (objects containing this text are refused with code 6, standing for
  an event Splunk cannot parse).
* ``indexed``: every indexed envelope with its token name and channel, for tests to assert
  exactly what arrived (duplicates included); ``record_limit`` keeps only the latest ones
  (long dry runs), ``indexed_count`` counts them all. Control routes under ``/_emulator/`` expose it
  and the knobs to another process: ``GET /_emulator/stats``, ``GET /_emulator/indexed``,
  ``POST /_emulator/faults`` (JSON of knob values), ``POST /_emulator/forget-channels``,
  ``POST /_emulator/reset``.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from emulators.httpd import App, Request, Response

DEFAULT_TOKEN = "00000000-0000-4000-8000-000000000000"
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

TEXTS = {
    0: "Success",
    1: "Token disabled",
    2: "Token is required",
    3: "Invalid authorization",
    4: "Invalid token",
    5: "No data",
    6: "Invalid data format",
    7: "Incorrect index",
    8: "Internal server error",
    9: "Server is busy",
    10: "Data channel is missing",
    11: "Invalid data channel",
    12: "Event field is required",
    13: "Event field cannot be blank",
    14: "ACK is disabled",
    15: "Error in handling indexed fields",
    16: "Query string authorization is not enabled",
    17: "HEC is healthy",
    18: "HEC is unhealthy, queues are full",
    24: "Queue is approaching capacity",
    25: "Ack queue is approaching capacity",
}
HTTP_STATUS = {0: 200, 1: 403, 2: 401, 3: 401, 4: 403, 8: 500, 9: 503, 17: 200, 18: 503, 24: 200, 25: 200}


def hec_answer(code: int, **extra: Any) -> Response:
    """The HEC JSON answer for ``code`` with its documented HTTP status."""
    return Response.json({"text": TEXTS[code], "code": code, **extra}, HTTP_STATUS.get(code, 400))


@dataclass
class TokenConfig:
    """One HEC token: allowed indexes (empty = any), default index, acknowledgement, disabled."""

    name: str = "dlpfwd"
    indexes: list[str] = field(default_factory=list)
    default_index: str = "main"
    use_ack: bool = False
    disabled: bool = False


@dataclass
class Channel:
    next_id: int = 0
    acks: dict[int, float] = field(default_factory=dict)  # ackId -> time it turns true (inf: never)
    last_used: float = 0.0


class HecApp(App):
    """The emulator; see the module docstring. Thread-safe (the server is threaded)."""

    def __init__(
        self,
        tokens: dict[str, TokenConfig] | None = None,
        *,
        max_content_length: int = 800 * 1024 * 1024,
        ack_delay: float = 0.0,
        allow_query_string_auth: bool = False,
        seed: int | None = None,
        record_limit: int | None = None,
    ) -> None:
        super().__init__()
        self.auto_gunzip = False
        self.max_body = max(self.max_body, max_content_length + 1)
        self.tokens = tokens if tokens is not None else {DEFAULT_TOKEN: TokenConfig()}
        self.max_content_length = max_content_length
        self.ack_delay = ack_delay
        self.drop_acks = False
        self.busy_next = 0
        self.busy_rate = 0.0
        self.indexer_delay = 0.0
        self.allow_query_string_auth = allow_query_string_auth
        self.report_event_number = True  # False: answer data errors without invalid-event-number
        self.capacity_warning = 0  # 24 or 25: accept requests with that "approaching capacity" code
        self.refuse_containing = ""  # objects containing this text are refused as invalid data (code 6)
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        # what was indexed: (envelope JSON bytes, index, token name, channel); bytes, not parsed
        # objects, so a long run does not make the garbage collector crawl over millions of dicts
        self._indexed: deque[tuple[bytes, str, str, str]] = deque(maxlen=record_limit)
        self.record = True  # False: count only (benchmarks, long dry runs)
        self.indexed_count = 0
        self.channels: dict[str, Channel] = {}
        self.requests = 0
        self.ack_polls = 0
        for path in ("/services/collector", "/services/collector/event", "/services/collector/event/1.0"):
            self.route("POST", path, self.event)
        for path in ("/services/collector/ack", "/services/collector/ack/1.0"):
            self.route("POST", path, self.ack)
        for path in ("/services/collector/health", "/services/collector/health/1.0"):
            self.route("GET", path, self.health)
            self.route("POST", path, self.health)
        self.route("GET", "/_emulator/stats", self.stats)
        self.route("GET", "/_emulator/indexed", self.dump)
        self.route("POST", "/_emulator/faults", self.faults)
        self.route("POST", "/_emulator/reset", self.reset_route)
        self.route("POST", "/_emulator/forget-channels", self.forget_route)

    # ------------------------------------------------------------------ auth and channels

    def _token(self, request: Request) -> tuple[TokenConfig | None, Response | None]:
        if "token" in request.query and not self.allow_query_string_auth:
            return None, hec_answer(16)
        header = request.header("authorization")
        value = ""
        if header:
            scheme, _, rest = header.partition(" ")
            if scheme.lower() == "splunk" and rest.strip():
                value = rest.strip()
            elif scheme.lower() == "basic" and rest.strip():
                try:
                    value = base64.b64decode(rest.strip()).decode().partition(":")[2]
                except (ValueError, UnicodeDecodeError):
                    return None, hec_answer(3)
            else:
                return None, hec_answer(3)
        elif "token" in request.query:
            value = request.query["token"]
        if not value:
            return None, hec_answer(2)
        token = self.tokens.get(value)
        if token is None:
            return None, hec_answer(4)
        if token.disabled:
            return None, hec_answer(1)
        return token, None

    def _channel(
        self, request: Request, token: TokenConfig, required: bool, create: bool = True
    ) -> tuple[Channel | None, Response | None]:
        """The request's channel; sends open unknown channels, ack polls on one answer code 11."""
        name = request.header("x-splunk-request-channel") or request.query.get("channel", "")
        if not name:
            return None, (hec_answer(10) if required else None)
        if not GUID.match(name) or (not create and name not in self.channels):
            return None, hec_answer(11)
        channel = self.channels.setdefault(name, Channel())
        channel.last_used = time.monotonic()
        return channel, None

    # ------------------------------------------------------------------ routes

    def event(self, request: Request) -> Response:
        token, problem = self._token(request)
        if problem is not None or token is None:
            return problem or hec_answer(4)
        if self.indexer_delay:
            time.sleep(self.indexer_delay)
        with self.lock:
            self.requests += 1
            if self.busy_next > 0:
                self.busy_next -= 1
                return hec_answer(9)
            if self.busy_rate and self.random.random() < self.busy_rate:
                return hec_answer(9)
            channel, problem = self._channel(request, token, token.use_ack)
            if problem is not None:
                return problem
        encoding = request.header("content-encoding").lower()
        body = request.body
        if len(body) > self.max_content_length:
            return self._too_large(len(body))
        if encoding == "gzip":
            try:
                body = _gunzip(body)
            except Exception:  # noqa: BLE001 - zlib, gzip and ISA-L each raise their own errors
                return hec_answer(6)
        elif encoding not in ("", "identity"):
            return Response.json({"text": f"Unsupported Content-Encoding {encoding}", "code": 6}, 415)
        if len(body) > self.max_content_length:
            return self._too_large(len(body))
        if not body.strip():
            return hec_answer(5)
        accepted, error = self._parse(body, token, request)
        with self.lock:
            name = request.header("x-splunk-request-channel") or request.query.get("channel", "")
            self.indexed_count += len(accepted)
            if self.record:
                self._indexed.extend((bytes(raw), index, token.name, name) for raw, index in accepted)
            if error is not None:
                code, n = error
                if not self.report_event_number:
                    return hec_answer(code)
                return hec_answer(code, **{"invalid-event-number": n})
            success = self.capacity_warning or 0
            if token.use_ack and channel is not None:
                ack_id = channel.next_id
                channel.next_id += 1
                channel.acks[ack_id] = float("inf") if self.drop_acks else time.monotonic() + self.ack_delay
                return hec_answer(success, ackId=ack_id)
        return hec_answer(success)

    def _too_large(self, size: int) -> Response:
        text = f"Content-Length of {size} too large (maximum is {self.max_content_length})"
        return Response.json({"text": text, "code": 413}, 413)

    def _parse(
        self, body: bytes, token: TokenConfig, request: Request
    ) -> tuple[list[tuple[memoryview | bytes, str]], tuple[int, int] | None]:
        """(envelope bytes, index) of the envelopes before the first bad one, and (code, its
        number) if there is one."""
        accepted: list[tuple[memoryview | bytes, str]] = []
        default_index = request.query.get("index") or token.default_index
        n = 0
        poison = self.refuse_containing.encode() if self.refuse_containing else b""
        for raw, obj in _objects(body):
            if obj is ... or (poison and poison in bytes(raw)):
                return accepted, (6, n)
            index = obj.index or default_index
            if not isinstance(index, str) or (token.indexes and index not in token.indexes):
                return accepted, (7, n)
            if obj.event is _MISSING:
                return accepted, (12, n)
            if obj.event is _BLANK:
                return accepted, (13, n)
            fields = obj.fields
            if fields is not None and not _flat(fields):
                return accepted, (15, n)
            accepted.append((raw, index))
            n += 1
        return accepted, None

    def ack(self, request: Request) -> Response:
        token, problem = self._token(request)
        if problem is not None or token is None:
            return problem or hec_answer(4)
        if not token.use_ack:
            return hec_answer(14)
        with self.lock:
            self.ack_polls += 1
            channel, problem = self._channel(request, token, True, create=False)
            if problem is not None or channel is None:
                return problem or hec_answer(10)
            try:
                ids = orjson.loads(request.body).get("acks")
            except (orjson.JSONDecodeError, AttributeError):
                return hec_answer(6)
            if not isinstance(ids, list):
                return hec_answer(6)
            now = time.monotonic()
            result: dict[str, bool] = {}
            for ack_id in ids:
                ready = channel.acks.get(ack_id) if isinstance(ack_id, int) else None
                done = ready is not None and ready <= now
                result[str(ack_id)] = done
                if done:
                    del channel.acks[ack_id]
            return Response.json({"acks": result})

    def health(self, request: Request) -> Response:
        return hec_answer(18) if self.busy_next > 0 or self.busy_rate >= 1.0 else hec_answer(17)

    # ------------------------------------------------------------------ control

    def stats(self, request: Request) -> Response:
        with self.lock:
            pending = sum(len(c.acks) for c in self.channels.values())
            return Response.json(
                {
                    "indexed": self.indexed_count,
                    "requests": self.requests,
                    "ack_polls": self.ack_polls,
                    "channels": len(self.channels),
                    "acks_outstanding": pending,
                }
            )

    def dump(self, request: Request) -> Response:
        return Response.json(self.indexed)

    def faults(self, request: Request) -> Response:
        knobs = request.json()
        with self.lock:
            for key in (
                "busy_next",
                "busy_rate",
                "indexer_delay",
                "drop_acks",
                "ack_delay",
                "max_content_length",
                "report_event_number",
                "record",
                "capacity_warning",
                "refuse_containing",
            ):
                if key in knobs:
                    setattr(self, key, knobs[key])
        return Response.json({"ok": True})

    def forget_route(self, request: Request) -> Response:
        self.forget_channels()
        return Response.json({"ok": True})

    def reset_route(self, request: Request) -> Response:
        self.reset()
        return Response.json({"ok": True})

    def forget_channels(self) -> None:
        """Drop every channel and its outstanding acks, as Splunk does for idle channels or on a
        restart: ack polls on them answer code 11."""
        with self.lock:
            self.channels.clear()

    def reset(self) -> None:
        with self.lock:
            self._indexed.clear()
            self.indexed_count = 0
            self.channels.clear()
            self.requests = self.ack_polls = 0
            self.busy_next = 0
            self.busy_rate = 0.0
            self.drop_acks = False

    @property
    def indexed(self) -> list[dict[str, Any]]:
        """Every indexed envelope in arrival order, with its effective ``index`` and the
        ``_token`` (name) and ``_channel`` it came with."""
        with self.lock:
            records = list(self._indexed)
        result = []
        for raw, index, token, channel in records:
            item = _parse_one(raw)
            item.update(index=index, _token=token, _channel=channel)
            result.append(item)
        return result

    def events(self) -> list[Any]:
        """The ``event`` part of every indexed envelope, in arrival order."""
        return [item["event"] for item in self.indexed]


def _flat(fields: Any) -> bool:
    if not isinstance(fields, dict):
        return False
    for value in fields.values():
        if isinstance(value, list):
            if any(isinstance(v, dict | list) for v in value):
                return False
        elif isinstance(value, dict):
            return False
    return True


_DECODER = json.JSONDecoder()

try:  # ISA-L inflates about twice as fast as zlib; the sink tests check bodies with stdlib gzip
    from isal import igzip as _igzip

    _gunzip = _igzip.decompress
except ImportError:  # pragma: no cover - optional speed-up
    _gunzip = gzip.decompress


def _parse_one(raw: bytes) -> dict[str, Any]:
    value = orjson.loads(raw)
    return value if isinstance(value, dict) else {"event": value}


class _Envelope(msgspec.Struct):
    """What the emulator checks in one HEC envelope. ``event`` stays raw (msgspec still checks
    that it is well-formed JSON) so that the bulk of each envelope is validated, not built."""

    index: Any = None
    event: msgspec.Raw = msgspec.Raw()
    fields: Any = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_MISSING: Any = object()  # the envelope has no "event"
_BLANK: Any = object()  # "event" is null, {}, or a string of whitespace


def _checked(event: msgspec.Raw) -> Any:
    """The raw ``event`` of a decoded envelope, or ``_MISSING`` / ``_BLANK``."""
    data = memoryview(event)
    if not data:
        return _MISSING
    first = data[0]
    if first == 0x6E or (first == 0x7B and not bytes(data[1:-1]).strip()):  # null, {}
        return _BLANK
    if first == 0x22 and _blank(orjson.loads(data)):  # a string
        return _BLANK
    return event


def _blank(event: Any) -> bool:
    return event is None or (isinstance(event, str) and not event.strip()) or event == {}


def _slow_envelope(value: Any) -> Any:
    """An already decoded JSON value as an :class:`_Envelope`, or ``...`` when it is not an object."""
    if not isinstance(value, dict):
        return ...
    event = _MISSING if "event" not in value else _BLANK if _blank(value["event"]) else value["event"]
    return _Envelope(index=value.get("index"), event=event, fields=value.get("fields"))


def _objects(body: bytes) -> Iterator[tuple[memoryview | bytes, Any]]:
    """Yield (raw, :class:`_Envelope`) for each concatenated JSON value of a HEC body, with
    ``event`` replaced by ``_MISSING``/``_BLANK`` where it is absent or blank; a value that is
    not a JSON object yields ``...``; one that does not parse yields ``...`` and stops.

    Newline-separated envelopes take a fast path (msgspec, zero-copy slices; about 4x less CPU
    than building each envelope with orjson); anything else is decoded value by value."""
    view = memoryview(body)
    start, size = 0, len(body)
    while start < size:
        end = body.find(b"\n", start)
        if end < 0:
            end = size
        line = view[start:end]
        start = end + 1
        if not bytes(line[:1]).strip() and not bytes(line).strip():
            continue
        try:
            envelope = _ENVELOPE.decode(line)
        except msgspec.MsgspecError:
            pass
        else:
            envelope.event = _checked(envelope.event)
            yield line, envelope
            continue
        try:
            yield line, _slow_envelope(orjson.loads(line))
            continue
        except orjson.JSONDecodeError:
            pass
        text = bytes(line).decode("utf-8", errors="replace")
        pos = 0
        while pos < len(text):
            while pos < len(text) and text[pos] in " \t\r":
                pos += 1
            if pos >= len(text):
                break
            first = pos
            try:
                value, pos = _DECODER.raw_decode(text, pos)
            except json.JSONDecodeError:
                yield b"", ...
                return
            yield text[first:pos].encode("utf-8"), _slow_envelope(value)
