"""The ``sentinel`` sink: DLP events into a Log Analytics custom table via the Logs Ingestion API.

Each batch becomes one or more ``POST {endpoint}/dataCollectionRules/{dcr}/streams/{stream}``
calls carrying a JSON array of ``PurviewDLP_CL`` rows (:mod:`sinks.sentinel.columns`), gzip
compressed, each within the 1 MB per-call limit before and after compression
(:mod:`sinks.sentinel.batching`). Answers, per call:

* ``204`` -- every row of the call delivered;
* ``413`` -- the call is halved and both halves re-sent; a single row the service still finds
  too large is dead-lettered;
* ``400`` -- the call is bisected until the offending row is alone; that row is dead-lettered
  with the service's error code and message, the others are delivered. Error codes that
  describe the request rather than a row (unknown stream, API version...) stop the sink;
* ``401`` -- the token is dropped and the call re-sent once with a new one; a fresh token that
  is still refused stops the sink (wrong cloud or scope);
* ``403`` -- stops the sink: the app lacks the *Monitoring Metrics Publisher* role on the DCR;
* ``404`` -- stops the sink: the endpoint does not know the DCR immutable id;
* ``429``, ``503`` and other ``5xx`` -- this call and the rest of the batch are retried later,
  after ``Retry-After`` when the service gave one.

The service does not deduplicate. A call whose answer is lost (timeout, connection reset
after the body was sent) may have been ingested; it is retried and counted in
``Outcome.duplicates_possible``. ``EventId`` and ``IdempotencyKey`` let queries remove such
duplicates (``summarize arg_max(TimeGenerated, *) by IdempotencyKey``).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from forwarder.auth import AuthSettings, TokenProvider, cloud_of
from forwarder.errors import FatalError, RetriableError
from forwarder.http import make_client, retry_after
from forwarder.settings import HttpSettings, setting
from forwarder.sink import Entry, Health, Outcome, Sink, SinkContext
from sinks.sentinel.batching import SERVICE_LIMIT, Chunk, Piece, fit_row, on_the_wire, pack, split
from sinks.sentinel.columns import STREAM, to_row
from sinks.sentinel.rows import encode_row

API_VERSION = "2023-01-01"

#: Calls of one batch in flight at once: the next call is encoded and sent while the previous
#: one waits for its answer (the service takes concurrent calls; rows carry no order).
IN_FLIGHT = 2

#: 400 error codes that describe the request (configuration), not one row: never bisect on them.
REQUEST_ERRORS = frozenset(
    {
        "InvalidStream",
        "InvalidDataCollectionRule",
        "InvalidApiVersion",
        "UnsupportedApiVersion",
        "MissingApiVersion",
        "InvalidContentType",
        "UnsupportedContentEncoding",
    }
)


@dataclass
class SentinelSettings:
    """``[[sinks]] type = "sentinel"``: where the Logs Ingestion API is and who we are."""

    endpoint: str = setting(
        doc="logs ingestion URL: the DCE's (https://<dce>.<region>-1.ingest.monitor.azure.com) "
        "or the DCR's own logsIngestion endpoint",
        url=("https",),
    )
    dcr_immutable_id: str = setting(doc="the DCR's immutable id, dcr-<32 hex digits> (DCR overview / JSON view)")
    auth: AuthSettings = setting(doc="the app registration holding Monitoring Metrics Publisher on the DCR")
    stream: str = setting(STREAM, doc="the DCR input stream (stream declaration name)")
    api_version: str = setting(API_VERSION, doc="Logs Ingestion API version")
    scope: str = setting("", doc="token scope; default: the cloud's Azure Monitor scope (auth.cloud)")
    gzip: bool = setting(True, doc="gzip request bodies (Content-Encoding: gzip)")
    compress_level: int = setting(
        1,
        doc="gzip level 1 (fast) .. 9 (small); ISA-L (the isal package, used when installed) caps it at 3",
        minimum=1,
        maximum=9,
    )
    max_request_bytes: int = setting(
        1_000_000,
        doc="largest request body, before and after gzip (the service refuses calls over 1,048,576 bytes)",
        minimum=1024,
        maximum=SERVICE_LIMIT,
    )
    http: HttpSettings = field(default_factory=HttpSettings)


@dataclass
class _Reply:
    """What one call produced: HTTP status (0 = no answer) and the service's error, if any."""

    status: int
    code: str = ""
    message: str = ""
    retry_after: float | None = None
    ambiguous: bool = False  # the body may have been ingested although no answer came back
    request_id: str = ""
    refreshed: bool = False  # a 401 made the sink fetch a new token and re-send


class SentinelSink(Sink):
    """Delivers events as ``PurviewDLP_CL`` rows; see the module docstring for the protocol."""

    settings_class = SentinelSettings
    max_batch_events = 5000
    # The sink packs its own calls from rows (not spool payloads), each within max_request_bytes;
    # the host cap only bounds memory, and several calls per batch let encoding overlap sending.
    max_batch_bytes = 5_000_000
    acknowledgements = False
    carries_raw = False

    def __init__(self, name: str, settings: SentinelSettings, context: SinkContext) -> None:
        super().__init__(name, settings, context)
        self.settings: SentinelSettings = settings
        self.tokens: Any = None  # TokenProvider; tests may inject any object with token()/invalidate()
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        base = settings.endpoint.rstrip("/")
        self.url = (
            f"{base}/dataCollectionRules/{quote(settings.dcr_immutable_id, safe='')}"
            f"/streams/{quote(settings.stream, safe='')}"
        )
        self.scope = settings.scope or cloud_of(settings.auth).monitor_scope
        self._parsed: tuple[str, httpx.URL] | None = None  # (url, parsed with api-version)

    # ------------------------------------------------------------------ lifecycle

    def connect(self) -> None:
        if self.tokens is None:
            try:
                self.tokens = TokenProvider(self.settings.auth, self.settings.http)
            except (OSError, ValueError) as exc:  # unreadable certificate/key files, bad PEM
                raise FatalError(f"auth: cannot load the app credential: {type(exc).__name__}: {exc}") from None
        if self._client is None:
            self._client = make_client(self.settings.http)
        self.tokens.token(self.scope)  # fail early on bad credentials (FatalError) or no login host

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def health(self) -> Health:
        health = Health()
        try:
            self.connect()
            health.add("token", True, f"token for {self.scope}")
        except (FatalError, RetriableError) as exc:
            return health.add("token", False, str(exc))
        try:
            assert self._client is not None
            response = self._client.get(self.settings.endpoint)
            # Any answer proves TLS and reachability; the DCR, stream and role assignment are only
            # checked by an upload (say so, rather than print a bare "HTTP 404" next to "ok").
            health.add(
                "endpoint",
                True,
                f"{self.settings.endpoint} reachable over TLS (HTTP {response.status_code} to a GET without a token;"
                " the DCR, stream and role assignment are checked by the first upload)",
            )
        except httpx.HTTPError as exc:
            health.add("endpoint", False, f"{self.settings.endpoint}: {type(exc).__name__}")
        return health

    # ------------------------------------------------------------------ delivery

    def write_batch(self, entries: Sequence[Entry]) -> Outcome:
        """Encode and send ``entries``; up to ``IN_FLIGHT`` calls are in flight while the next is
        encoded. When a call stops the batch, the answers to calls already sent are still recorded
        (delivered or retried), so each entry's outcome is exact."""
        outcome = Outcome()
        if not entries:
            return outcome
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix=f"sentinel-{self.name}")
        s = self.settings
        in_flight: deque[tuple[Chunk, Future[_Reply]]] = deque()
        going = True
        for group in pack(self._pieces(entries, outcome), s.max_request_bytes):
            chunk = Chunk.of(group)
            if len(in_flight) >= IN_FLIGHT:
                oldest, reply = in_flight.popleft()
                going = self._settle(oldest, reply.result(), outcome)
                if not going:
                    break
            in_flight.append((chunk, self._pool.submit(self._call, chunk)))
        while in_flight:
            oldest, reply = in_flight.popleft()
            if going:
                going = self._settle(oldest, reply.result(), outcome)
            else:
                self._settle_sent(oldest, reply.result(), outcome)
        settled = set(outcome.delivered) | set(outcome.retry) | set(outcome.rejected)
        outcome.retry.extend(e.id for e in entries if e.id not in settled)  # never encoded: batch stopped
        return outcome

    def _pieces(self, entries: Sequence[Entry], outcome: Outcome) -> Iterator[Piece]:
        """Encoded rows; events that cannot be encoded or cannot fit are recorded as rejected."""
        limit = self.settings.max_request_bytes
        for entry in entries:
            # the common case: the row's JSON straight from the payload (not entry.data: nothing
            # is kept alive per entry; a view: no copy out of the spool's buffer), when it has
            # the schema's shape and fits a call
            body: bytes | None = encode_row(entry.payload_view())
            if body is not None and len(body) <= limit - 2:
                yield Piece(entry.id, body)
                continue
            try:
                row = to_row(orjson.loads(entry.payload))
            except orjson.JSONDecodeError:
                outcome.rejected[entry.id] = "spooled payload is not valid JSON"
                continue
            body, trimmed = fit_row(row, limit)
            if body is None:
                outcome.rejected[entry.id] = (
                    f"event does not fit one Logs Ingestion call ({limit} bytes) even after trimming {trimmed}"
                )
                self.context.count("oversized_rejected")
                continue
            if trimmed:
                self.context.count("trimmed")
                self.log.warning("%s: event %s trimmed to fit the call limit: %s", self.name, entry.id, trimmed)
            yield Piece(entry.id, body)

    def _settle(self, chunk: Chunk, reply: _Reply, outcome: Outcome) -> bool:
        """Record what ``reply`` means for ``chunk``; split and re-send on 400/413 until settled.

        Returns False when the batch must stop (retry later, or a fatal configuration fault).
        """
        queue: deque[tuple[Chunk, _Reply | None]] = deque([(chunk, reply)])
        while queue:
            current, answer = queue.popleft()
            if answer is None:
                answer = self._call(current)
            if answer.refreshed:
                self.context.count("token_refreshes")  # counted here: _call may run in the sender thread
            status = answer.status
            if 200 <= status < 300:
                outcome.delivered.extend(current.entry_ids)
                self.context.count("requests")
                continue
            if status in (400, 413) and answer.code not in REQUEST_ERRORS:
                if len(current.pieces) > 1:
                    left, right = split(current)
                    queue.appendleft((right, None))
                    queue.appendleft((left, None))
                    self.context.count("splits_413" if status == 413 else "bisections_400")
                    continue
                reason = f"Logs Ingestion API refused the event: HTTP {status} {answer.code}: {answer.message}"
                if status == 413:
                    reason = (
                        f"Logs Ingestion API found the event too large alone ({len(current.body)} bytes; HTTP 413 "
                        f"{answer.code}): lower max_request_bytes if a proxy imposes a smaller limit"
                    )
                outcome.rejected[current.pieces[0].entry_id] = reason
                continue
            # the batch stops here: this call and every one not yet settled are retried
            outcome.retry.extend(current.entry_ids)
            for rest, _ in queue:
                outcome.retry.extend(rest.entry_ids)
            if status == 0 or status == 429 or status >= 500:
                outcome.retry_reason = (
                    answer.message if status == 0 else f"Logs Ingestion API HTTP {status} {answer.code}"
                )
                outcome.retry_reason = outcome.retry_reason.rstrip()
                outcome.retry_after = answer.retry_after
                if answer.ambiguous:
                    outcome.duplicates_possible += len(current.pieces)
            else:
                outcome.fatal = answer.message if status == -1 else self._fatal_message(answer)
            return False
        return True

    def _settle_sent(self, chunk: Chunk, reply: _Reply, outcome: Outcome) -> None:
        """Record the answer to a call already in flight when the batch stopped: delivered on a
        2xx, otherwise retried (no further calls: the batch has stopped)."""
        if reply.refreshed:
            self.context.count("token_refreshes")
        if 200 <= reply.status < 300:
            outcome.delivered.extend(chunk.entry_ids)
            self.context.count("requests")
            return
        outcome.retry.extend(chunk.entry_ids)
        if reply.ambiguous:
            outcome.duplicates_possible += len(chunk.pieces)

    def _fatal_message(self, reply: _Reply) -> str:
        s = self.settings
        where = f"DCR {s.dcr_immutable_id}, stream {s.stream} at {s.endpoint}"
        detail = f"{reply.code}: {reply.message}".strip(": ")
        if reply.status == 403:
            return (
                f"Logs Ingestion API refused the app {s.auth.client_id} (HTTP 403 {detail}): assign it the "
                f"'Monitoring Metrics Publisher' role on the data collection rule ({where}); a new role "
                f"assignment can take up to 30 minutes to apply"
            )
        if reply.status == 401:
            return (
                f"Logs Ingestion API refused a freshly issued token (HTTP 401 {detail}): check auth.cloud / scope "
                f"(token scope {self.scope}) and the tenant of the app ({where})"
            )
        if reply.status == 404:
            return f"Logs Ingestion API does not know this DCR or stream (HTTP 404 {detail}): check {where}"
        return f"Logs Ingestion API refused the request (HTTP {reply.status} {detail}): check {where}"

    # ------------------------------------------------------------------ one call

    def _call(self, chunk: Chunk) -> _Reply:
        """Send one chunk, refreshing the token once on 401. Token faults become status 0 (retry)
        or -1 (fatal) replies; nothing here raises."""
        try:
            if self._client is None or self.tokens is None:
                self.connect()
            reply = self._send_once(chunk)
            if reply.status == 401:
                self.tokens.invalidate(self.scope)
                reply = self._send_once(chunk)
                reply.refreshed = True
            return reply
        except FatalError as exc:
            return _Reply(-1, message=str(exc))
        except RetriableError as exc:
            return _Reply(0, message=str(exc), retry_after=exc.retry_after)

    def _call_url(self) -> httpx.URL:
        """The call URL with its api-version, parsed once (httpx re-parses a str URL and its
        params on every request, about 40 us)."""
        if self._parsed is None or self._parsed[0] != self.url:
            self._parsed = (self.url, httpx.URL(self.url, params={"api-version": self.settings.api_version}))
        return self._parsed[1]

    def _send_once(self, chunk: Chunk) -> _Reply:
        assert self._client is not None
        token = self.tokens.token(self.scope)
        request_id = str(uuid.uuid4())
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "x-ms-client-request-id": request_id,
        }
        s = self.settings
        wire, gzipped = on_the_wire(chunk, s.max_request_bytes, s.gzip, s.compress_level)
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        try:
            response = self._client.post(self._call_url(), content=wire, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return _Reply(0, message=f"cannot reach {self.settings.endpoint}: {type(exc).__name__}")
        except httpx.TransportError as exc:
            return _Reply(0, message=f"no answer from {self.settings.endpoint}: {type(exc).__name__}", ambiguous=True)
        reply = _Reply(response.status_code, request_id=request_id)
        if response.status_code >= 300:
            reply.code, reply.message = _error_of(response)
            reply.retry_after = retry_after(response)
            self.log.debug(
                "%s: HTTP %s %s (x-ms-client-request-id %s)", self.name, reply.status, reply.code, request_id
            )
        return reply


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of an error answer ``{"error": {"code", "message"}}``; message cut to 300 chars."""
    try:
        body = response.json()
    except ValueError:
        return "", response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("code", "")), str(error.get("message", ""))[:300]
    return "", response.reason_phrase
