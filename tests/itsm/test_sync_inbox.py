"""The sync inbox: validation, idempotence on (origin, reference, version), order per incident,
retry times, settlement with the shadow in one transaction, and durability across reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

from forwarder.state.sqlite import open_store
from forwarder.sync import inbox
from forwarder.sync.change import StatusChange


def change(incident: str = "42", ref: str = "r1", version: str = "1", **kw: object) -> StatusChange:
    return StatusChange(incident, "inbound", ref, version, **kw)  # type: ignore[arg-type]


def test_enqueue_is_idempotent_and_normalizes_enums(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    try:
        c = change(status="Resolved", classification="TRUEPOSITIVE", determination="compromisedUser")
        assert inbox.enqueue(store, c) is True
        assert inbox.enqueue(store, c) is False
        assert inbox.enqueue(store, change(version="2", status="inProgress")) is True
        (item,) = inbox.due(store)  # one per incident: the oldest first
        assert (item.change.status, item.change.classification, item.change.determination) == (
            "resolved",
            "truePositive",
            "compromisedAccount",  # the CSDL spelling is stored and sent
        )
        assert inbox.stats(store)["total_repeats"] == 1
    finally:
        store.close()


def test_invalid_change_names_every_bad_field(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    try:
        with pytest.raises(ValueError) as err:
            inbox.enqueue(store, StatusChange("42", "elsewhere", "r", "1", status="closed", classification="benign"))
        text = str(err.value)
        assert "origin:" in text and "status: expected one of" in text and "classification: expected one of" in text
        with pytest.raises(ValueError, match="sets nothing"):
            inbox.enqueue(store, change())
        assert inbox.stats(store)["pending"] == 0
    finally:
        store.close()


def test_strict_from_dict() -> None:
    with pytest.raises(ValueError, match="unknown field"):
        StatusChange.from_dict({"incident_id": "1", "origin": "inbound", "reference": "r", "version": "1", "x": 1})
    with pytest.raises(ValueError, match="missing field"):
        StatusChange.from_dict({"incident_id": "1", "origin": "inbound"})


def test_later_changes_of_an_incident_wait_for_a_deferred_one(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    try:
        inbox.enqueue(store, change("1", version="1", status="inProgress"))
        inbox.enqueue(store, change("1", version="2", status="resolved"))
        inbox.enqueue(store, change("2", ref="r2", status="resolved"))
        first = inbox.due(store)
        assert [i.change.incident_id for i in first] == ["1", "2"]
        inbox.defer(store, first[0], 60.0, "HTTP 503")
        assert [i.change.incident_id for i in inbox.due(store)] == ["2"]
        assert [i.change.version for i in inbox.due(store, now=10**12)] == ["1", "1"]  # due again later
        inbox.finish(
            store, first[0], inbox.APPLIED, shadow={"defender": {"status": "inProgress"}}, counts={"applied": 1}
        )
        nxt = [i for i in inbox.due(store) if i.change.incident_id == "1"]
        assert [i.change.version for i in nxt] == ["2"]
    finally:
        store.close()


def test_settled_state_and_shadow_survive_reopening(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    inbox.enqueue(store, change(status="resolved"))
    (item,) = inbox.due(store)
    inbox.finish(store, item, inbox.DEAD, "HTTP 400 BadRequest", counts={"dead_lettered": 1})
    store.close()
    store = open_store(str(tmp_path))
    try:
        assert inbox.due(store) == []
        assert inbox.enqueue(store, change(status="resolved")) is False  # still recognised
        ((_, dead_change, reason),) = inbox.dead(store)
        assert dead_change.status == "resolved" and "HTTP 400" in reason
        assert inbox.stats(store)["dead"] == 1
        assert inbox.purge(store, before=10**12) == 1
    finally:
        store.close()
