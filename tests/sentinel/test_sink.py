"""The sentinel sink against the Logs Ingestion emulator over TLS."""

from __future__ import annotations

import gzip
import socket

import orjson

from emulators.logs_ingestion.app import Fault
from forwarder.schema import KIND_ALERT, to_json
from forwarder.sink import Entry
from sinks.sentinel.columns import STREAM
from tests.sentinel.helpers import APP, Issuer, ScriptedTokens, entries, event, make_sink


def test_delivers_rows_with_the_column_mapping(emulator, tokens):
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    sink.connect()
    batch = entries([event(i) for i in range(50)])
    outcome = sink.write_batch(batch)
    assert sorted(outcome.delivered) == [e.id for e in batch]
    assert not outcome.retry and not outcome.rejected and outcome.fatal is None
    rows = emulator.app.all_rows(STREAM)
    assert len(rows) == 50
    row = rows[3]
    assert row["TimeGenerated"] == "2026-11-23T10:00:00Z"
    assert row["EventId"] == "evt-3"
    assert row["UserUpn"] == "user3@contoso.com"
    assert row["PolicyNames"] == ["U.S. Financial Data"]
    assert row["RuleNames"] == ["High volume"]
    assert row["Actions"] == ["BlockAccess", "NotifyUser"]
    assert row["SensitiveTypeNames"] == ["Credit Card Number"]
    assert row["SensitiveMatchCount"] == 3
    assert row["Recipients"] == ["a@fabrikam.com", "b@fabrikam.com"]
    assert row["SeverityRank"] == 4
    assert row["RecordType"] == 11 and row["ObjectSize"] == 12345
    assert "RawRecord" not in row and "Description" not in row  # empty values are left out
    assert emulator.app.stats.requests == 1
    sink.close()


def test_time_generated_falls_back_to_update_then_ingest_time(emulator, tokens):
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    a = event(1, event_time="", kind=KIND_ALERT, updated_time="2026-11-23T11:00:00Z")
    b = event(2, event_time="", updated_time="")
    assert len(sink.write_batch(entries([a, b])).delivered) == 2
    rows = {r["EventId"]: r for r in emulator.app.all_rows(STREAM)}
    assert rows["evt-1"]["TimeGenerated"] == "2026-11-23T11:00:00Z"
    assert rows["evt-2"]["TimeGenerated"] == "2026-11-23T10:01:00Z"


def test_bodies_are_gzip_and_within_the_limit_before_and_after(emulator, tokens):
    sink = make_sink(emulator.url, emulator.ca_file, tokens, max_request_bytes=20_000)
    batch = entries([event(i, description="x" * 300) for i in range(400)])
    outcome = sink.write_batch(batch)
    assert len(outcome.delivered) == 400
    stats = emulator.app.stats
    assert stats.requests > 10 and stats.statuses == {204: stats.requests}
    # every call fitted: nothing split by the service, and the wire carried less than the JSON
    assert stats.bytes_in < 20_000 * stats.requests
    assert len(emulator.app.all_rows(STREAM)) == 400


def test_uncompressed_mode(emulator, tokens):
    sink = make_sink(emulator.url, emulator.ca_file, tokens, gzip=False)
    assert len(sink.write_batch(entries([event(i) for i in range(5)])).delivered) == 5


def test_413_splits_the_call_until_it_fits(issuer, tmp_path, tokens):
    from emulators.httpd import EmulatorServer
    from tests.sentinel.helpers import make_app

    app = make_app(issuer, limit=6000)  # a service stricter than the sink believes
    with EmulatorServer(app, cert_dir=tmp_path) as server:
        sink = make_sink(server.url, server.ca_file, tokens, gzip=False)
        outcome = sink.write_batch(entries([event(i) for i in range(40)]))
    assert len(outcome.delivered) == 40 and not outcome.rejected
    assert app.stats.statuses.get(413, 0) >= 1
    assert len(app.all_rows(STREAM)) == 40


def test_400_bisects_and_dead_letters_only_the_bad_event(emulator, tokens):
    from forwarder.testing import sink_context

    emulator.app.reject_when("EventId", "evt-13")
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    sink.context = sink_context("sentinel")
    batch = entries([event(i) for i in range(32)])
    outcome = sink.write_batch(batch)
    bad = batch[13].id
    assert list(outcome.rejected) == [bad]
    assert "InvalidPayload" in outcome.rejected[bad]
    assert sorted(outcome.delivered) == sorted(e.id for e in batch if e.id != bad)
    ids = sorted(r["EventId"] for r in emulator.app.all_rows(STREAM))
    assert len(ids) == 31 and "evt-13" not in ids
    # bisection is logarithmic: 1 + 2 per level below the top, not one call per event
    assert emulator.app.stats.requests <= 1 + 2 * 5
    assert sink.context.counters["bisections_400"] == 5


def test_429_retries_the_batch_after_retry_after(emulator, tokens):
    emulator.app.inject(Fault(429, retry_after=7))
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    batch = entries([event(i) for i in range(10)])
    outcome = sink.write_batch(batch)
    assert sorted(outcome.retry) == [e.id for e in batch] and not outcome.delivered
    assert outcome.retry_after == 7 and "429" in outcome.retry_reason
    assert outcome.duplicates_possible == 0
    assert len(sink.write_batch(batch).delivered) == 10


def test_503_mid_batch_keeps_what_was_delivered(emulator, tokens):
    sink = make_sink(emulator.url, emulator.ca_file, tokens, max_request_bytes=8000, gzip=False)
    emulator.app.inject(Fault(), Fault(503, retry_after=3))  # first call fine, second refused
    batch = entries([event(i) for i in range(30)])
    outcome = sink.write_batch(batch)
    assert outcome.delivered and outcome.retry
    assert sorted(outcome.delivered + outcome.retry) == [e.id for e in batch]
    assert outcome.retry_after == 3
    assert len(emulator.app.all_rows(STREAM)) == len(outcome.delivered)


def test_calls_in_flight_when_the_batch_stops_are_settled_exactly(emulator, tokens):
    """Two calls are in flight at once: when one is refused (503), the answer to the other is still
    recorded, so what was stored is exactly what the outcome calls delivered, nothing lost."""
    sink = make_sink(emulator.url, emulator.ca_file, tokens, max_request_bytes=8000, gzip=False)
    for base, faults in ((0, [Fault(503, retry_after=1)]), (100, [Fault(), Fault(503, retry_after=1)])):
        emulator.app.inject(*faults)
        batch = entries([event(base + i) for i in range(30)])
        names = {e.id: f"evt-{base + e.id - 1}" for e in batch}  # entry ids start at 1
        outcome = sink.write_batch(batch)
        assert outcome.retry and outcome.retry_after == 1
        assert sorted(outcome.delivered + outcome.retry) == [e.id for e in batch]
        stored = {r["EventId"] for r in emulator.app.all_rows(STREAM)} & set(names.values())
        assert stored == {names[i] for i in outcome.delivered}
    sink.close()


def test_401_refreshes_the_token_once(emulator, issuer, tokens):
    from forwarder.testing import sink_context

    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    sink.context = sink_context("sentinel")
    sink.connect()
    tokens.first = [issuer.token(lifetime=-3600)]  # an expired token next
    outcome = sink.write_batch(entries([event(1)]))
    assert outcome.delivered == [1] and tokens.invalidated == 1
    assert sink.context.counters["token_refreshes"] == 1
    assert emulator.app.stats.statuses == {401: 1, 204: 1}


def test_token_for_another_audience_stops_the_sink(emulator, issuer):
    tokens = ScriptedTokens(issuer)
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    sink.connect()
    tokens.first = [issuer.token(aud="https://graph.microsoft.com") for _ in range(2)]
    outcome = sink.write_batch(entries([event(1)]))
    assert outcome.fatal and "fresh" in outcome.fatal and outcome.retry == [1]
    for token in tokens.handed:
        assert token not in outcome.fatal


def test_403_names_the_missing_role_and_never_the_token(emulator, issuer):
    tokens = ScriptedTokens(issuer, appid="99999999-0000-0000-0000-000000000000")
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    batch = entries([event(i) for i in range(3)])
    outcome = sink.write_batch(batch)
    assert outcome.fatal and "Monitoring Metrics Publisher" in outcome.fatal and APP in outcome.fatal
    assert sorted(outcome.retry) == [1, 2, 3] and not outcome.rejected
    for token in tokens.handed:
        assert token not in outcome.fatal


def test_unknown_stream_stops_instead_of_dead_lettering_everything(emulator, tokens):
    sink = make_sink(emulator.url, emulator.ca_file, tokens, stream="Custom-Nope_CL")
    outcome = sink.write_batch(entries([event(i) for i in range(16)]))
    assert outcome.fatal and "InvalidStream" in outcome.fatal
    assert not outcome.rejected and len(outcome.retry) == 16
    assert emulator.app.stats.requests == 1


def test_unknown_dcr_stops_the_sink(emulator, tokens):
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    sink.url = sink.url.replace("dcr-0123", "dcr-9999")
    outcome = sink.write_batch(entries([event(1)]))
    assert outcome.fatal and "404" in outcome.fatal


def test_oversized_event_is_trimmed_raw_record_first(emulator, tokens):
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    big = event(1, raw={"blob": "r" * 1_200_000})
    small = event(2, raw={"Operation": "DlpRuleMatch"})
    outcome = sink.write_batch(entries([big, small]))
    assert sorted(outcome.delivered) == [1, 2]
    rows = {r["EventId"]: r for r in emulator.app.all_rows(STREAM)}
    assert rows["evt-1"]["TrimmedFields"] == ["RawRecord"] and "RawRecord" not in rows["evt-1"]
    assert rows["evt-1"]["PolicyNames"] == ["U.S. Financial Data"]
    assert rows["evt-2"]["RawRecord"] == {"Operation": "DlpRuleMatch"} and "TrimmedFields" not in rows["evt-2"]


def test_huge_recipient_list_is_cut_and_noted(emulator, tokens):
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    recipients = [f"person{i:06d}@fabrikam.example" for i in range(60_000)]
    outcome = sink.write_batch(entries([event(1, recipients=recipients)]))
    assert outcome.delivered == [1]
    (row,) = emulator.app.all_rows(STREAM)
    assert 0 < len(row["Recipients"]) < 60_000
    assert row["Recipients"] == recipients[: len(row["Recipients"])]
    assert any(t.startswith("Recipients:60000->") for t in row["TrimmedFields"])


def test_event_that_cannot_fit_is_dead_lettered_not_retried(emulator, tokens):
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    outcome = sink.write_batch(entries([event(1, idempotency_key="k" * 1_100_000), event(2)]))
    assert list(outcome.rejected) == [1] and "does not fit" in outcome.rejected[1]
    assert outcome.delivered == [2] and not outcome.retry


def test_lost_204_is_retried_and_counted_as_possible_duplicates(emulator, tokens):
    emulator.app.inject(Fault(stall=1.5))
    sink = make_sink(emulator.url, emulator.ca_file, tokens, timeout=0.5)
    batch = entries([event(i) for i in range(4)])
    outcome = sink.write_batch(batch)
    assert sorted(outcome.retry) == [1, 2, 3, 4] and outcome.duplicates_possible == 4
    assert len(sink.write_batch(batch).delivered) == 4
    # the service does not deduplicate: the rows arrived twice (IdempotencyKey tells them apart)
    keys = [r["IdempotencyKey"] for r in emulator.app.all_rows(STREAM)]
    assert len(keys) == 8 and len(set(keys)) == 4


def test_unreachable_endpoint_is_retried_without_duplicates(tokens, emulator):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = make_sink(f"https://127.0.0.1:{port}", emulator.ca_file, tokens, timeout=2)
    outcome = sink.write_batch(entries([event(1)]))
    assert outcome.retry == [1] and outcome.duplicates_possible == 0 and outcome.fatal is None
    assert "cannot reach" in outcome.retry_reason


def test_undecodable_spool_payload_is_rejected(emulator, tokens):
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    outcome = sink.write_batch([Entry(1, b"{not json"), *entries([event(2)], start=2)])
    assert list(outcome.rejected) == [1] and outcome.delivered == [2]


def test_empty_batch_sends_nothing(emulator, tokens):
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    outcome = sink.write_batch([])
    assert not outcome.delivered and emulator.app.stats.requests == 0


def test_health_reports_token_and_endpoint(emulator, tokens):
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    health = sink.health()
    assert health.ok, health.checks
    endpoint = next(check for check in health.checks if check.name == "endpoint")
    assert "reachable over TLS" in endpoint.detail and "checked by the first upload" in endpoint.detail


def test_emulator_received_gzip(emulator, tokens, issuer: Issuer):
    # the sink compresses: what the emulator stored equals what the sink built
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    batch = entries([event(i) for i in range(3)])
    sink.write_batch(batch)
    json_size = len(orjson.dumps(emulator.app.all_rows(STREAM)))
    assert emulator.app.stats.bytes_in < json_size
    assert gzip.decompress(gzip.compress(b"[]")) == b"[]"


def test_unreadable_certificate_is_a_fatal_configuration_error(emulator, tmp_path):
    from forwarder.auth import AuthSettings
    from forwarder.errors import FatalError

    sink = make_sink(emulator.url, emulator.ca_file, None)
    sink.settings.auth = AuthSettings("t", "c", certificate=str(tmp_path / "missing.pem"))
    try:
        sink.connect()
    except FatalError as exc:
        assert "certificate" in str(exc)
    else:
        raise AssertionError("connect() accepted a missing certificate")
    health = sink.health()
    assert not health.ok and health.checks[0].name == "token"


def test_several_bad_events_are_all_isolated(emulator, tokens):
    for bad in ("evt-0", "evt-17", "evt-18", "evt-63"):
        emulator.app.reject_when("EventId", bad)
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    batch = entries([event(i) for i in range(64)])
    outcome = sink.write_batch(batch)
    assert sorted(outcome.rejected) == [1, 18, 19, 64]
    assert len(outcome.delivered) == 60 and not outcome.retry
    assert len(emulator.app.all_rows(STREAM)) == 60


def test_entries_read_from_a_spool_segment_are_delivered_from_views(emulator, tokens):
    """The host's spool rows share their segment's buffer; the sink reads them through
    payload_view() and must deliver the same rows as from bytes."""
    from forwarder.state.base import SpoolRow

    payloads = [to_json(event(i)) for i in range(5)]
    segment = b"".join(payloads)
    rows, start = [], 0
    for i, p in enumerate(payloads):
        rows.append(SpoolRow.in_segment(i + 1, segment, start, start + len(p), unit=0, attempts=0))
        start += len(p)
    sink = make_sink(emulator.url, emulator.ca_file, tokens)
    outcome = sink.write_batch(rows)
    assert sorted(outcome.delivered) == [1, 2, 3, 4, 5]
    assert sorted(r["EventId"] for r in emulator.app.all_rows(STREAM)) == [f"evt-{i}" for i in range(5)]
