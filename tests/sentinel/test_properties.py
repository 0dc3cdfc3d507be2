"""Property: whatever the service answers, every entry of a batch ends in exactly one bucket,
only rows the service refused alone are dead-lettered, and delivered means stored."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.testing import assert_accounted
from sinks.sentinel import sink as sink_module
from tests.sentinel.helpers import entries, event, make_sink

answers = st.lists(st.sampled_from([204, 204, 204, 413, 429, 503, 500, -401, 0]), max_size=30)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 40),
    bad=st.sets(st.integers(0, 39), max_size=4),
    script=answers,
    limit=st.integers(3000, 40_000),
)
def test_every_entry_settles_exactly_once(n, bad, script, limit):
    sink = make_sink("https://dce.example", "", tokens=None, max_request_bytes=limit)
    stored: list[str] = []
    script = list(script)

    def call(chunk):
        rows = orjson.loads(chunk.body)
        answer = script.pop(0) if script else 204
        if answer == 204 and any(int(r["EventId"].split("-")[1]) in bad for r in rows):
            answer = 400  # a row the service cannot take
        if answer == 204:
            stored.extend(r["EventId"] for r in rows)
            return sink_module._Reply(204)
        if answer == 0:
            return sink_module._Reply(0, message="timed out", ambiguous=True)
        if answer == -401:
            return sink_module._Reply(401, code="InvalidAuthenticationToken")
        return sink_module._Reply(answer, code="X", retry_after=1.0 if answer in (429, 503) else None)

    sink._call = call
    batch = entries([event(i) for i in range(n)], start=0)
    outcome = sink.write_batch(batch)
    assert_accounted(batch, outcome)
    by_id = {e.id: f"evt-{e.id}" for e in batch}
    assert sorted(stored) == sorted(by_id[i] for i in outcome.delivered)
    for entry_id, reason in outcome.rejected.items():
        # only rows refused on their own are dead-lettered: a bad row, or one row still "too large"
        assert entry_id in bad or "too large" in reason
    if outcome.fatal:
        assert "401" in outcome.fatal
    if outcome.retry:
        assert outcome.retry_reason or outcome.fatal
    assert outcome.duplicates_possible <= len(outcome.retry)
