"""The ``webhook`` sink: DLP events POSTed as JSON to any HTTPS URL, signed with HMAC-SHA256.

One POST per event (``mode = "event"``: a JSON object, with ``Idempotency-Key`` and
``X-Dlpfwd-Event-Id`` headers so a receiver can drop the duplicates at-least-once delivery
brings) or one per batch (``mode = "array"``: a JSON array). The signature and timestamp
headers are described in :mod:`sinks.webhook.signing`; the payload in :mod:`sinks.webhook.payload`.

Classification of the receiver's answer:

* 2xx -> delivered;
* 408, 425, 429, 5xx, transport errors -> retry (with ``Retry-After`` when given);
* 413 -> an array is split in halves, a single event is rejected;
* 400, 422 and other 4xx -> rejected with the status and the start of the answer (an array is
  bisected first, so only the events the receiver refuses are dead-lettered);
* 401, 403 -> the sink stops: the receiver refused the signature or token (check ``secret``,
  ``bearer_token`` and both clocks); 404, 405, 410 and 3xx (redirects are not followed: a
  signed POST must go to the final URL) -> the sink stops naming ``url``.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

import httpx
import orjson

from forwarder.errors import ConfigError, RetriableError
from forwarder.http import make_client, map_exceptions, retry_after
from forwarder.sink import Entry, Health, Outcome, Sink, SinkContext
from sinks.webhook.payload import build_payload, check_fields
from sinks.webhook.settings import WebhookSettings
from sinks.webhook.signing import sign

RETRY_STATUSES = {408, 425, 429}
FATAL_URL_STATUSES = {404, 405, 410}


class WebhookSink(Sink):
    """See the module docstring."""

    settings_class = WebhookSettings
    max_batch_events = 500
    carries_raw = False

    def __init__(self, name: str, settings: WebhookSettings, context: SinkContext) -> None:
        super().__init__(name, settings, context)
        self.path = f"sinks.{name}"
        problems = check_fields(settings.fields, settings.rename, settings.include_detected_values, self.path)
        for header in settings.headers:
            if header.lower() in ("authorization", "content-type", "x-dlpfwd-signature", "x-dlpfwd-timestamp"):
                problems.append(f"{self.path}.headers.{header}: set by the sink itself (use secret or bearer_token)")
        if problems:
            raise ConfigError(problems)
        self.client: httpx.Client | None = None

    def connect(self) -> None:
        if self.client is None:
            headers = {**self.settings.headers, "Content-Type": "application/json"}
            if self.settings.bearer_token:
                headers["Authorization"] = f"Bearer {self.settings.bearer_token.reveal()}"
            self.client = make_client(self.settings.http, headers=headers, follow_redirects=False)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def health(self) -> Health:
        """Only configuration: a webhook has no side-effect-free probe (a POST would be an event)."""
        return Health().add("configured", True, f"POSTs to {self.settings.url} ({self.settings.mode} mode)")

    # ------------------------------------------------------------------ delivery

    def payload(self, entry: Entry) -> dict[str, object]:
        s = self.settings
        return build_payload(entry.data, s.fields, s.rename, s.include_detected_values)

    def write_batch(self, entries: Sequence[Entry]) -> Outcome:
        self.connect()
        if self.settings.mode == "array":
            return self._post_array(list(entries))
        outcome = Outcome()
        for index, entry in enumerate(entries):
            body = orjson.dumps(self.payload(entry))
            key = str(entry.data.get("idempotency_key") or entry.id)
            extra = {
                "Idempotency-Key": _header_value(key),
                "X-Dlpfwd-Event-Id": _header_value(str(entry.data.get("id"))),
            }
            result, _ = self._post(body, [entry], extra)
            outcome.merge(result)
            if result.fatal or result.retry:
                outcome.merge(Outcome(retry=[e.id for e in entries[index + 1 :]]))
                break
        return outcome

    def _post_array(self, entries: list[Entry]) -> Outcome:
        """POST ``entries`` as one JSON array. When the receiver refuses the array as a whole
        (413, or a 4xx rejection), bisect: halves are posted separately until the refused events
        are alone, so nothing the receiver accepted is sent twice."""
        body = orjson.dumps([self.payload(e) for e in entries])
        result, refused = self._post(body, entries, {})
        if not refused or len(entries) < 2:
            return result
        half = len(entries) // 2
        first = self._post_array(entries[:half])
        if first.fatal or first.retry:
            return first.merge(Outcome(retry=[e.id for e in entries[half:]]))
        return first.merge(self._post_array(entries[half:]))

    def _post(self, body: bytes, entries: Sequence[Entry], extra: dict[str, str]) -> tuple[Outcome, bool]:
        """One signed POST; the outcome for every entry in it, and whether the receiver refused
        the request as a whole for its content (413 or a 4xx rejection: worth splitting)."""
        assert self.client is not None
        headers = dict(extra)
        if self.settings.secret:
            headers.update(sign(body, self.settings.secret.reveal()))
        try:
            with map_exceptions(f"webhook {self.name}"):
                response = self.client.post(self.settings.url, content=body, headers=headers)
        except RetriableError as exc:
            return Outcome.all_retry(entries, str(exc), exc.retry_after), False
        status = response.status_code
        if 200 <= status < 300:
            self.context.count("posts")
            return Outcome.all_delivered(entries), False
        what = f"webhook {self.settings.url} answered HTTP {status}"
        if status in RETRY_STATUSES or status >= 500:
            return Outcome.all_retry(entries, what, retry_after(response)), False
        if status in (401, 403):
            message = (
                f"{what}: the receiver refused the request; check {self.path}.secret / {self.path}.bearer_token "
                "and that both clocks are right (signatures carry a timestamp)"
            )
            return Outcome.stop(entries, message), False
        if status in FATAL_URL_STATUSES or 300 <= status < 400:
            return Outcome.stop(entries, f"{what}: check {self.path}.url (redirects are not followed)"), False
        reason = f"{what}: {_snippet(response)}"
        return Outcome(rejected={e.id: reason for e in entries}), True


def _header_value(text: str) -> str:
    """A header-safe form of an id: visible ASCII kept, anything else percent-encoded (so a
    hostile id can neither break the request nor inject a header)."""
    return quote(text, safe="!#$&'()*+,/:;=?@[]~-._")[:512]


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:300] if text else "(empty answer)"
