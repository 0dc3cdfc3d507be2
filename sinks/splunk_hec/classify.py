"""Classify one HEC response into what the sink must do with the request's events.

Splunk answers every ``/services/collector/*`` request with ``{"text": ..., "code": n}``
(see ``docs/splunk.md`` for the table). The sink's reaction depends only on the HTTP status,
that code and, for data errors, ``invalid-event-number``:

* ``ok`` -- accepted: any 2xx (code 0, or 24/25 "approaching capacity", which the sink logs
  as a warning); with indexer acknowledgement the body carries ``ackId``.
* ``retry`` -- transient: server busy (9, 503), internal error (8, 5xx), unhealthy queues
  (18-20), 429. Nothing is lost: the events are sent again later, to another endpoint if any.
* ``data`` -- this request holds an event Splunk will never accept (5, 6, 12, 13, 15):
  isolate the offender (``invalid-event-number`` or bisecting), dead-letter it,
  send the rest.
* ``split`` -- HTTP 413: the request is over ``max_content_length``; send halves.
* ``channel`` -- code 11 "Invalid data channel": the server forgot our channel; open a new one
  and re-send.
* ``fatal`` -- a configuration fault no retry can fix (token disabled/invalid/missing, index not
  allowed for the token, acknowledgement required or disabled, query-string auth): stop the
  sink with a message naming the setting to fix. The token value is never part of a message.
* anything else (a 4xx without a HEC code, an undocumented code) -- ``retry``: it does not
  prove the events bad, and dead-lettering them all would lose data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

OK = "ok"
RETRY = "retry"
DATA = "data"
SPLIT = "split"
CHANNEL = "channel"
FATAL = "fatal"

#: Documented HEC status codes -> text (Splunk "Troubleshoot HTTP Event Collector").
CODES: dict[int, str] = {
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
    19: "HEC is unhealthy, ack service unavailable",
    20: "HEC is unhealthy, queues are full, ack service unavailable",
    # On HTTP 200 in recent releases: the data was accepted, but a queue is nearly full. The
    # texts are paraphrased (field reports, not re-read from Splunk's page).
    24: "Queue is approaching capacity",
    25: "Ack queue is approaching capacity",
}

#: Codes that come with HTTP 200: accepted, with a warning worth surfacing.
WARNING_CODES = frozenset({24, 25})

RETRY_CODES = frozenset({8, 9, 18, 19, 20})
DATA_CODES = frozenset({5, 6, 12, 13, 15})


@dataclass(frozen=True)
class Verdict:
    """What to do with a request: ``action`` (one of the module constants) and why."""

    action: str
    code: int | None
    message: str
    invalid_event: int | None = None  # 0-based index of the offending object, when Splunk said
    ack_id: int | None = None
    warning: str = ""  # an accepted request's capacity warning (codes 24, 25), to log


def parse_body(content: bytes) -> dict[str, Any]:
    """The JSON body of a HEC answer, or ``{}`` when it is not a JSON object."""
    try:
        data = orjson.loads(content) if content else {}
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def describe(status: int, body: dict[str, Any]) -> str:
    """``HTTP 400 code 7 "Incorrect index"`` -- for logs and dead-letter reasons."""
    code = body.get("code")
    text = body.get("text") or (CODES.get(code, "") if isinstance(code, int) else "")
    parts = [f"HTTP {status}"]
    if isinstance(code, int):
        parts.append(f"code {code}")
    if text:
        parts.append(f'"{str(text)[:200]}"')
    return " ".join(parts)


def classify(status: int, body: dict[str, Any], *, sink: str, ack: bool) -> Verdict:
    """Turn an HTTP status and parsed HEC body into a :class:`Verdict`.

    ``sink`` is the sink instance name (used to name settings in fatal messages); ``ack`` says
    whether the sink runs with indexer acknowledgement.
    """
    raw_code = body.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    what = describe(status, body)
    key = f"sinks.{sink}"
    if 200 <= status < 300:
        # any 2xx means accepted: re-sending would duplicate (codes 24/25 only warn)
        warning = what if code not in (0, None) else ""
        raw_ack = body.get("ackId")
        ack_id = raw_ack if isinstance(raw_ack, int) and not isinstance(raw_ack, bool) else None
        if ack and ack_id is None:
            return Verdict(
                FATAL,
                code,
                f"{what} without an ackId although {key}.ack = true: the HEC token does not have indexer "
                f"acknowledgement (useACK) enabled; enable it on the token or set {key}.ack = false",
            )
        return Verdict(OK, code, what, ack_id=ack_id, warning=warning)
    if status == 413:
        return Verdict(SPLIT, code, f"{what}: request larger than the HEC's max_content_length")
    if code in (1, 2, 3, 4) or status in (401, 403):
        return Verdict(
            FATAL,
            code,
            f"{what}: the HEC rejected the token; check {key}.token (a valid, enabled HEC token) "
            "and that HEC is enabled on the Splunk side",
        )
    if code == 7:
        return Verdict(
            FATAL,
            code,
            f"{what}: an index is not allowed for this HEC token; check {key}.index and {key}.index_by_kind "
            "against the token's allowed indexes",
        )
    if code == 10:
        return Verdict(
            FATAL,
            code,
            f"{what}: the HEC token requires indexer acknowledgement (useACK); set {key}.ack = true "
            "or disable acknowledgement on the token",
        )
    if code == 14:
        return Verdict(
            FATAL,
            code,
            f"{what}: {key}.ack = true but indexer acknowledgement is disabled on the HEC token; enable "
            f"it on the token (useACK) or set {key}.ack = false (weaker guarantee, see docs/splunk.md)",
        )
    if code == 16:
        return Verdict(FATAL, code, f"{what}: query-string token authentication is not enabled on the HEC")
    if code == 11:
        return Verdict(CHANNEL, code, what)
    if code in RETRY_CODES or status in (429, 503) or status >= 500:
        return Verdict(RETRY, code, what)
    if status == 404:
        return Verdict(FATAL, code, f"{what}: no HEC endpoint at this address; check {key}.url")
    if code in DATA_CODES:
        raw_n = body.get("invalid-event-number")
        n = raw_n if isinstance(raw_n, int) and not isinstance(raw_n, bool) else None
        return Verdict(DATA, code, what, invalid_event=n)
    # Anything else (a 4xx without a HEC code, e.g. from a proxy; an undocumented code) is not
    # proof that the events are bad: dead-lettering them all would lose data. Retry, visibly.
    return Verdict(RETRY, code, f"{what}: unexpected answer (is a proxy in the way?)")
