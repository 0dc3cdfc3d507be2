"""Indexer acknowledgement bookkeeping: which entries wait on which (endpoint, channel, ackId).

After HTTP 200 ``{"code":0,"ackId":n}`` the request's entries are *pending*. :meth:`AckTracker.poll`
asks ``POST /services/collector/ack`` (same endpoint, same channel) about up to
``batch_size`` ids per request and settles:

* ``true`` -> delivered (Splunk indexed the request; it then forgets the id).
* still ``false`` after ``timeout`` seconds -> retry, counted in ``duplicates_possible``: the
  request may have been indexed after all and the re-send may duplicate it.
* code 11 (the server dropped our channel) -> every id of that channel is lost: retry (with
  duplicates possible) and continue on a new channel.
* code 14 (acknowledgement disabled on the token) -> fatal, with the setting to fix.
* network errors -> keep waiting; the timeout above bounds it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from forwarder.errors import RetriableError
from forwarder.sink import Outcome
from sinks.splunk_hec.classify import CHANNEL, FATAL, OK, classify, parse_body
from sinks.splunk_hec.endpoints import Endpoint

ACK_PATH = "/services/collector/ack"


@dataclass
class PendingRequest:
    """Entries of one accepted request awaiting their ack."""

    entry_ids: list[int]
    sent_at: float


class AckTracker:
    """Pending requests per endpoint and channel; see the module docstring. Thread-safe:
    background senders :meth:`add` while the drain thread polls."""

    def __init__(
        self,
        sink: str,
        timeout: float = 300.0,
        batch_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.timeout = timeout
        self.batch_size = batch_size
        self.clock = clock
        self._lock = threading.Lock()
        # (endpoint, channel) -> ackId -> pending request
        self.pending: dict[tuple[Endpoint, str], dict[int, PendingRequest]] = {}

    def add(self, endpoint: Endpoint, channel: str, ack_id: int, entry_ids: list[int]) -> None:
        with self._lock:
            self.pending.setdefault((endpoint, channel), {})[ack_id] = PendingRequest(list(entry_ids), self.clock())

    def count(self) -> int:
        """Entries still awaiting an ack."""
        with self._lock:
            return sum(len(p.entry_ids) for reqs in self.pending.values() for p in reqs.values())

    def poll(self) -> Outcome:
        """Ask every channel with pending requests; settle what can be settled."""
        outcome = Outcome()
        with self._lock:
            snapshot = {key: sorted(reqs) for key, reqs in self.pending.items()}
        for key, ids in snapshot.items():
            for start in range(0, len(ids), self.batch_size):
                if not self._poll_chunk(key, ids[start : start + self.batch_size], outcome):
                    break
            self._expire(key, outcome)
            if outcome.fatal:
                break
        with self._lock:
            for key in [k for k, reqs in self.pending.items() if not reqs]:
                del self.pending[key]
        return outcome

    def _poll_chunk(self, key: tuple[Endpoint, str], chunk: list[int], out: Outcome) -> bool:
        """Poll one batch of ack ids; False when this channel should not be polled further now."""
        endpoint, channel = key
        body = orjson.dumps({"acks": chunk})
        try:
            response = endpoint.post(ACK_PATH, body, {"X-Splunk-Request-Channel": channel})
        except RetriableError as exc:
            out.retry_reason = out.retry_reason or str(exc)
            return False
        data = parse_body(response.content)
        verdict = classify(response.status_code, data, sink=self.sink, ack=False)
        if verdict.action == OK:
            acks = data.get("acks")
            if not isinstance(acks, dict):
                return False
            with self._lock:
                requests = self.pending.get(key, {})
                for ack_id in chunk:
                    if acks.get(str(ack_id)) is True and ack_id in requests:
                        out.delivered.extend(requests.pop(ack_id).entry_ids)
            return True
        if verdict.action == CHANNEL:
            with self._lock:
                requests = self.pending.pop(key, {})
            for request in requests.values():
                out.retry.extend(request.entry_ids)
                out.duplicates_possible += len(request.entry_ids)
            out.retry_reason = out.retry_reason or f"acknowledgement channel lost ({verdict.message}); re-sending"
            if endpoint.channel == channel:
                endpoint.new_channel()
            return False
        if verdict.action == FATAL:
            out.fatal = verdict.message
            return False
        out.retry_reason = out.retry_reason or f"ack poll: {verdict.message}"
        return False

    def _expire(self, key: tuple[Endpoint, str], out: Outcome) -> None:
        now = self.clock()
        with self._lock:
            requests = self.pending.get(key, {})
            expired = [requests.pop(a) for a, p in list(requests.items()) if now - p.sent_at >= self.timeout]
        for request in expired:
            out.retry.extend(request.entry_ids)
            out.duplicates_possible += len(request.entry_ids)
            out.retry_reason = out.retry_reason or f"no indexer acknowledgement within {self.timeout:g} s; re-sending"

    def abandon(self) -> list[int]:
        """Forget every pending request (on close); their entries stay in the spool."""
        with self._lock:
            ids = [i for reqs in self.pending.values() for p in reqs.values() for i in p.entry_ids]
            self.pending.clear()
        return ids
