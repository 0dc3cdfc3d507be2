"""The ``splunk_hec`` sink: DLP events into Splunk through the HTTP Event Collector.

Delivery guarantee:

* ``ack = true`` (the HEC token has indexer acknowledgement, ``useACK``): an entry is
  *delivered* only when Splunk reports its request's ackId as indexed. Until then it is
  *pending*; after ``ack_timeout`` it is re-sent (duplicates possible, counted, and recognisable
  by ``dlpfwd.idempotency_key``).
* ``ack = false``: delivered means HTTP 200 with code 0 -- Splunk received and parsed the
  request, which is *not* a promise that it was indexed (an indexer failure can still lose it).

With ``ack = true`` requests go out on up to ``max_in_flight`` background senders, so the next
batch is formatted while Splunk parses the previous one; ``write_batch`` reports their entries
pending and the ack poll reports what became of them (delivered, re-sent, dead-lettered, or a
configuration fault). While sends fail, the sink sends synchronously, so the host sees the
failures at once and backs off.

Within one ``write_batch`` the sink: builds envelopes (``envelope.py``); packs them into requests
of at most ``max_request_bytes`` (uncompressed); gzips them; sends each to an endpoint chosen by
the pool (``endpoints.py``), failing over to the next endpoint on network errors and busy
answers; splits a request in halves on 413; isolates an event Splunk refuses (by
``invalid-event-number`` when Splunk gives it, else by bisecting) and dead-letters it alone;
stops with a clear message on configuration faults (``classify.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import orjson

from forwarder.errors import FatalError, RetriableError
from forwarder.http import make_client
from forwarder.http import retry_after as parse_retry_after
from forwarder.schema import KINDS
from forwarder.settings import HttpSettings, Secret, setting
from forwarder.sink import Entry, Health, Outcome, Sink, SinkContext
from sinks.splunk_hec import classify as cl
from sinks.splunk_hec.acks import ACK_PATH, AckTracker
from sinks.splunk_hec.endpoints import FAILOVER, ROUND_ROBIN, Endpoint, EndpointPool
from sinks.splunk_hec.envelope import EnvelopeBuilder

try:  # ISA-L's deflate is about 5x faster than zlib's at level 1; same gzip format
    from isal import isal_zlib as _gzip
except ImportError:  # pragma: no cover - optional speed-up
    import zlib as _gzip  # type: ignore[no-redef]

_MAX_LEVEL: int = getattr(_gzip, "ISAL_BEST_COMPRESSION", 9)

#: Consecutive code-11 answers to sends, each on a fresh channel, that make a configuration fault.
CHANNEL_REFUSALS_FATAL = 3

EVENT_PATH = "/services/collector/event"
HEALTH_PATH = "/services/collector/health"


@dataclass
class SplunkHecSettings:
    """Settings of one ``splunk_hec`` sink (``[[sinks]] type = "splunk_hec"``)."""

    url: str = setting(doc="HEC base URL, e.g. https://splunk.example:8088", url=("https", "http"))
    token: Secret = setting(doc="HEC token (${ENV} or file:/path); never logged")
    urls: list[str] = setting(
        default_factory=list, doc="more HEC base URLs (other indexers / heavy forwarders) to balance over"
    )
    balance: str = setting(
        ROUND_ROBIN,
        doc="round_robin spreads requests over all URLs; failover uses the first healthy one in order",
        choices=(ROUND_ROBIN, FAILOVER),
    )
    endpoint_cooldown: float = setting(30.0, doc="seconds a failed endpoint is tried last", minimum=0)
    ack: bool = setting(False, doc="use indexer acknowledgement (the token must have it enabled): delivered = indexed")
    ack_timeout: float = setting(300.0, doc="seconds to wait for an ack before re-sending the request", minimum=1)
    ack_poll_interval: float = setting(1.0, doc="least seconds between two ack polls", minimum=0)
    ack_batch: int = setting(1000, doc="most ack ids asked in one poll request", minimum=1)
    max_in_flight: int = setting(
        2,
        doc="with ack = true: requests sent in the background at once (write_batch returns their entries "
        "pending; send failures come back through the ack poll); 0 sends synchronously",
        minimum=0,
        maximum=16,
    )
    index: str = setting("", doc="index for every event ('' = the token's default index)")
    index_by_kind: dict[str, str] = setting(
        default_factory=dict, doc="index per event kind (audit, alert, incident, correlation), overriding index"
    )
    sourcetype_by_kind: dict[str, str] = setting(
        default_factory=dict,
        doc="sourcetype per event kind; default dlpfwd:purview:<kind> (what the add-on configures)",
    )
    source: str = setting("", doc="HEC source ('' = dlpfwd:<source instance name>)")
    source_by_kind: dict[str, str] = setting(default_factory=dict, doc="HEC source per event kind, overriding source")
    host: str = setting("", doc="HEC host ('' = this machine's name)")
    host_by_kind: dict[str, str] = setting(default_factory=dict, doc="HEC host per event kind, overriding host")
    indexed_fields: list[str] = setting(
        default_factory=list, doc="schema fields (dotted, e.g. tenant_id, user.upn) also sent as indexed fields"
    )
    gzip: bool = setting(True, doc="gzip request bodies")
    gzip_level: int = setting(
        1,
        doc="gzip level 1 (fast) .. 9 (small); ISA-L (the isal package, used when installed) caps it at 3",
        minimum=1,
        maximum=9,
    )
    max_request_bytes: int = setting(
        900_000,
        doc="most uncompressed bytes in one request (Splunk Cloud: about 1 MB; Enterprise: max_content_length)",
        minimum=1024,
    )
    http: HttpSettings = field(default_factory=HttpSettings)


class HecSink(Sink):
    """Splunk HEC sink; see the module docstring for the guarantee and the algorithm."""

    settings_class = SplunkHecSettings
    max_batch_events = 10_000
    max_batch_bytes = 0
    acknowledgements = True
    carries_raw = False

    def __init__(self, name: str, settings: SplunkHecSettings, context: SinkContext) -> None:
        super().__init__(name, settings, context)
        self.settings: SplunkHecSettings = settings
        self.envelopes = EnvelopeBuilder(
            index=settings.index,
            indexes=settings.index_by_kind,
            sourcetypes=settings.sourcetype_by_kind,
            source=settings.source,
            sources=settings.source_by_kind,
            host=settings.host,
            hosts=settings.host_by_kind,
            fields=settings.indexed_fields,
        )
        self.acks = AckTracker(name, timeout=settings.ack_timeout, batch_size=settings.ack_batch)
        self.pool: EndpointPool | None = None
        self._last_poll = 0.0
        self._background = settings.ack and settings.max_in_flight > 0
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: list[tuple[Future[Outcome], list[int]]] = []
        self._completed = Outcome()  # results of background sends not yet reported
        self._failing = False  # background sends failed: send synchronously until one succeeds

    # ------------------------------------------------------------------ lifecycle

    def connect(self) -> None:
        """Build one client and channel per endpoint. No request is made (``health`` probes)."""
        if self.pool is not None:
            return
        for key in ("index_by_kind", "sourcetype_by_kind", "source_by_kind", "host_by_kind"):
            for kind in getattr(self.settings, key):
                if kind not in KINDS:
                    raise FatalError(
                        f"sinks.{self.name}.{key}.{kind}: unknown event kind (expected one of {', '.join(KINDS)})"
                    )
        urls = [self.settings.url, *self.settings.urls]
        for i, url in enumerate(urls):
            if not url.startswith(("https://", "http://")):
                key = "url" if i == 0 else f"urls[{i - 1}]"
                raise FatalError(f"sinks.{self.name}.{key}: expected an https URL, got {url!r}")
        headers = {"Authorization": f"Splunk {self.settings.token.reveal()}", "Content-Type": "application/json"}
        if self.settings.gzip:
            headers["Content-Encoding"] = "gzip"
        self.pool = EndpointPool(
            urls,
            lambda: make_client(self.settings.http),
            headers,
            mode=self.settings.balance,
            cooldown=self.settings.endpoint_cooldown,
            use_channel=self.settings.ack,
        )

    def close(self) -> None:
        """Close the clients. Entries still pending stay in the host's spool and are re-sent later."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._inflight.clear()
        self._completed = Outcome()
        left = self.acks.abandon()
        if left:
            self.log.info("%s: closing with %d entries awaiting indexer acknowledgement", self.name, len(left))
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    # ------------------------------------------------------------------ writing

    def write_batch(self, entries: Sequence[Entry]) -> Outcome:
        """Deliver ``entries``; see the module docstring."""
        self.connect()
        outcome = Outcome()
        limit = self.settings.max_request_bytes
        request: list[tuple[Entry, bytes]] = []
        size = 0
        requests: list[list[tuple[Entry, bytes]]] = []
        for entry in entries:
            try:
                # decode without caching on the entry (the host may keep entries while they are
                # pending), from a view: no copy of the payload out of the spool's buffer
                envelope = self.envelopes.envelope(entry.payload_view())
            except Exception as exc:  # noqa: BLE001 - one unreadable entry must not block the rest
                outcome.rejected[entry.id] = f"cannot build a HEC envelope: {type(exc).__name__}: {exc}"
                continue
            if len(envelope) + 1 > limit:
                outcome.rejected[entry.id] = (
                    f"event envelope of {len(envelope)} bytes exceeds sinks.{self.name}.max_request_bytes = {limit}"
                )
                continue
            if request and size + len(envelope) + 1 > limit:
                requests.append(request)
                request, size = [], 0
            request.append((entry, envelope))
            size += len(envelope) + 1
        if request:
            requests.append(request)
        if self._background:
            self._harvest()
        if self._background and not self._failing:
            if self._completed.fatal:
                outcome.merge(Outcome.stop([e for req in requests for e, _ in req], self._completed.fatal))
                return outcome
            for req in requests:
                self._submit(req)
                outcome.pending.extend(e.id for e, _ in req)
            self.context.count("events_sent", len(outcome.pending))
            return outcome
        for i, req in enumerate(requests):
            outcome.merge(self._send(req))
            if outcome.fatal:
                for rest in requests[i + 1 :]:
                    outcome.retry.extend(e.id for e, _ in rest)
                break
        if outcome.pending or outcome.delivered:
            self._failing = False
        self.context.count("events_sent", len(outcome.delivered) + len(outcome.pending))
        return outcome

    # ------------------------------------------------------------------ background sending (ack = true)

    def _submit(self, request: list[tuple[Entry, bytes]]) -> None:
        """Hand a request to a background sender, waiting while ``max_in_flight`` are running."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.settings.max_in_flight, thread_name_prefix=f"hec-{self.name}")
        while len(self._inflight) >= self.settings.max_in_flight:
            wait([f for f, _ in self._inflight], return_when=FIRST_COMPLETED)
            self._harvest()
        self._inflight.append((self._executor.submit(self._send, request), [e.id for e, _ in request]))

    def _harvest(self) -> None:
        """Collect finished background sends into ``_completed`` (their pending entries are
        already with the ack tracker)."""
        still: list[tuple[Future[Outcome], list[int]]] = []
        for future, ids in self._inflight:
            if not future.done():
                still.append((future, ids))
                continue
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - a send that crashed is retried, not lost
                result = Outcome(retry=ids, retry_reason=f"HEC send failed: {type(exc).__name__}: {exc}")
            if result.pending:
                self._failing = False
            elif result.retry:
                # the endpoints are failing: send synchronously until one succeeds, so that the
                # host sees the failures in write_batch and backs off (its breaker can open)
                self._failing = True
            result.pending = []
            self._completed.merge(result)
        self._inflight = still

    def _body(self, request: list[tuple[Entry, bytes]]) -> bytes:
        raw = b"\n".join(env for _, env in request)
        if not self.settings.gzip:
            return raw
        compressor = _gzip.compressobj(min(self.settings.gzip_level, _MAX_LEVEL), _gzip.DEFLATED, 31)
        return compressor.compress(raw) + compressor.flush()

    def _send(self, request: list[tuple[Entry, bytes]]) -> Outcome:
        """Send one request, failing over between endpoints; split/isolate as the answer says."""
        assert self.pool is not None
        ids = [e.id for e, _ in request]
        body = self._body(request)
        reason = "no HEC endpoint answered"
        retry_after: float | None = None
        for endpoint in self.pool.order():
            channel = endpoint.channel
            try:
                response = endpoint.post(EVENT_PATH, body)
            except RetriableError as exc:
                reason = str(exc)
                self.pool.fail(endpoint, reason)
                self.log.warning("%s: %s; trying the next endpoint if any", self.name, reason)
                continue
            data = cl.parse_body(response.content)
            verdict = cl.classify(response.status_code, data, sink=self.name, ack=self.settings.ack)
            if verdict.action == cl.OK:
                endpoint.mark_up()
                endpoint.channel_refusals = 0
                self.context.count("bytes_sent", len(body))
                if verdict.warning:
                    self.context.count("hec_capacity_warnings")
                    self.log.warning("%s: %s: accepted, but Splunk is nearing capacity", self.name, verdict.warning)
                if self.settings.ack and verdict.ack_id is not None:
                    self.acks.add(endpoint, channel, verdict.ack_id, ids)
                    return Outcome(pending=ids)
                return Outcome(delivered=ids)
            if verdict.action == cl.RETRY:
                reason = f"{endpoint.url}: {verdict.message}"
                retry_after = parse_retry_after(response) or retry_after
                self.pool.fail(endpoint, reason)
                self.log.warning("%s: %s; trying the next endpoint if any", self.name, reason)
                continue
            if verdict.action == cl.CHANNEL:
                endpoint.channel_refusals += 1
                if endpoint.channel_refusals >= CHANNEL_REFUSALS_FATAL:
                    message = (
                        f"{endpoint.url}: {verdict.message} {endpoint.channel_refusals} times in a row, on fresh "
                        f"channels: something between dlpfwd and Splunk rewrites X-Splunk-Request-Channel, or the "
                        f"token's acknowledgement setting disagrees with sinks.{self.name}.ack"
                    )
                    self.log.error("%s: %s", self.name, message)
                    return Outcome.stop([e for e, _ in request], message)
                endpoint.new_channel()
                reason = f"{endpoint.url}: {verdict.message}; new channel"
                continue
            if verdict.action == cl.SPLIT:
                return self._split(request, verdict.message)
            if verdict.action == cl.DATA:
                return self._isolate(request, verdict, endpoint)
            self.log.error("%s: %s", self.name, verdict.message)
            return Outcome.stop([e for e, _ in request], verdict.message)
        return Outcome(retry=ids, retry_reason=reason, retry_after=retry_after)

    def _send_halves(self, first: list[tuple[Entry, bytes]], second: list[tuple[Entry, bytes]]) -> Outcome:
        """Send two parts in order; after a configuration fault the second is kept for later."""
        outcome = self._send(first) if first else Outcome()
        if outcome.fatal:
            outcome.retry.extend(e.id for e, _ in second)
            return outcome
        return outcome.merge(self._send(second))

    def _split(self, request: list[tuple[Entry, bytes]], message: str) -> Outcome:
        if len(request) == 1:
            entry, envelope = request[0]
            return Outcome(
                rejected={entry.id: f"{message}: a single event of {len(envelope)} bytes is over the HEC's limit"}
            )
        half = len(request) // 2
        self.context.count("hec_splits")
        return self._send_halves(request[:half], request[half:])

    def _isolate(self, request: list[tuple[Entry, bytes]], verdict: cl.Verdict, endpoint: Endpoint) -> Outcome:
        """Dead-letter the event Splunk refused and send the others.

        With ``invalid-event-number`` n, Splunk indexed objects 0..n-1 already: without acks they
        are delivered; with acks (no ackId came back) they are re-sent, duplicates counted.
        Without it, bisect; halves that were partly indexed may duplicate on re-send.
        """
        n = verdict.invalid_event
        if len(request) == 1:
            entry, _ = request[0]
            self.context.count("hec_rejected")
            return Outcome(rejected={entry.id: f"refused by Splunk: {verdict.message}"})
        if n is not None and 0 <= n < len(request):
            head, bad, tail = request[:n], request[n], request[n + 1 :]
            outcome = Outcome(rejected={bad[0].id: f"refused by Splunk: {verdict.message}"})
            self.context.count("hec_rejected")
            if head:
                if self.settings.ack:
                    resent = self._send(head)
                    resent.duplicates_possible += len(head)
                    outcome.merge(resent)
                else:
                    outcome.delivered.extend(e.id for e, _ in head)
            if tail and outcome.fatal:
                outcome.retry.extend(e.id for e, _ in tail)
            elif tail:
                outcome.merge(self._send(tail))
            return outcome
        half = len(request) // 2
        outcome = self._send_halves(request[:half], request[half:])
        outcome.duplicates_possible += half  # the first half may have been indexed before the refusal
        return outcome

    # ------------------------------------------------------------------ acknowledgements

    def poll_acks(self) -> Outcome:
        """Poll ``/services/collector/ack`` for pending requests. Calls closer together than
        ``ack_poll_interval`` return an empty outcome at once (the host calls this between
        writes; it never blocks the drain)."""
        if not self.settings.ack or self.pool is None:
            return Outcome()
        self._harvest()
        outcome, self._completed = self._completed, Outcome()
        now = time.monotonic()
        if not self.acks.pending or now - self._last_poll < self.settings.ack_poll_interval:
            return outcome
        self._last_poll = now
        outcome.merge(self.acks.poll())
        if outcome.fatal:
            self.log.error("%s: %s", self.name, outcome.fatal)
        return outcome

    # ------------------------------------------------------------------ health

    def health(self) -> Health:
        """``dlpfwd check``: per endpoint, HEC health (code 17), the token (an empty request answers
        code 5 "No data" when the token is valid, nothing is indexed), indexer acknowledgement
        (an empty ack poll) and each configured index (a blank-event probe: code 7 means the
        token may not write there; nothing is indexed)."""
        health = Health()
        try:
            self.connect()
        except FatalError as exc:
            return health.add("configuration", False, str(exc))
        assert self.pool is not None
        for endpoint in self.pool.endpoints:
            self._probe(endpoint, health)
        return health

    def _probe(self, endpoint: Endpoint, health: Health) -> None:
        where = endpoint.url
        try:
            r = endpoint.get(HEALTH_PATH)
        except RetriableError as exc:
            health.add(f"{where} reachable", False, str(exc))
            return
        body = cl.parse_body(r.content)
        health.add(f"{where} HEC health", r.status_code == 200, cl.describe(r.status_code, body))
        try:
            r = endpoint.post(EVENT_PATH, b"", {"Content-Encoding": "identity"})
            body = cl.parse_body(r.content)
            code = body.get("code")
            if code == 5:
                health.add(f"{where} authentication", True, "HEC token accepted")
            else:
                verdict = cl.classify(r.status_code, body, sink=self.name, ack=self.settings.ack)
                health.add(f"{where} authentication", False, verdict.message)
                return
            if self.settings.ack:
                r = endpoint.post(ACK_PATH, b'{"acks":[]}', {"Content-Encoding": "identity"})
                body = cl.parse_body(r.content)
                ok = r.status_code == 200 and isinstance(body.get("acks"), dict)
                detail = "enabled" if ok else cl.classify(r.status_code, body, sink=self.name, ack=True).message
                health.add(f"{where} indexer acknowledgement", ok, detail)
            for index in self.envelopes.indexes_in_use():
                if not index:
                    continue
                probe = b'{"event":"","sourcetype":"dlpfwd:check","index":' + orjson.dumps(index) + b"}"
                r = endpoint.post(EVENT_PATH, probe, {"Content-Encoding": "identity"})
                body = cl.parse_body(r.content)
                code = body.get("code")
                if code == 7:
                    health.add(
                        f"{where} index {index}",
                        False,
                        f"{cl.describe(r.status_code, body)}: not allowed for this token "
                        f"(sinks.{self.name}.index / index_by_kind)",
                    )
                elif code in (12, 13):
                    health.add(
                        f"{where} index {index}", True, "allowed for this token (blank-event probe, nothing indexed)"
                    )
                else:
                    health.add(f"{where} index {index}", False, cl.describe(r.status_code, body))
        except RetriableError as exc:
            health.add(f"{where} authentication", False, str(exc))
