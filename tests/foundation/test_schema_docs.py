"""The schema round-trips through orjson and docs/schema.md matches the code."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from forwarder.ocsf import CONSTANTS, MAPPING, to_ocsf
from forwarder.schema import DlpEvent, from_dict, from_json, schema_fields, to_dict, to_json
from forwarder.testing import check_mapping_table, markdown_table, sample_events

DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.id[:20])
def test_every_sample_event_round_trips(event: DlpEvent) -> None:
    data = to_json(event)
    assert from_json(data) == event
    assert from_dict(orjson.loads(data)) == event


@pytest.mark.parametrize(
    "junk",
    [
        {},
        {"id": 5, "severity": None, "policies": "nope", "object": [], "user": "x", "record_type": "13"},
        {"policies": [{"rules": [None, 3, {"actions": "BlockAccess"}]}], "unknown_field": {"a": 1}},
        {"sensitive_types": [{"count": "many", "detected_values": [{"value": 4111}]}]},
    ],
)
def test_missing_and_wrong_fields_become_empty_values(junk: dict) -> None:
    event = from_dict(junk)
    assert isinstance(event, DlpEvent)
    assert from_json(to_json(event)) == event


def test_field_table_documents_every_schema_field_and_nothing_else() -> None:
    documented = [row[0].strip("`") for row in markdown_table(DOC, "Fields")]
    assert sorted(documented) == sorted(schema_fields())
    assert len(documented) == len(set(documented)), "a field is documented twice"


def test_every_mapping_section_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    for heading in (
        "Splunk CIM Data Loss Prevention",
        "CEF",
        "LEEF 2.0",
        "Sentinel custom table (PurviewDLP_CL)",
        "OCSF Data Security Finding",
    ):
        assert f"## {heading}\n" in text


def test_ocsf_table_matches_the_formatter() -> None:
    check_mapping_table(DOC, "OCSF Data Security Finding", MAPPING, constants=CONSTANTS)


def test_ocsf_maps_every_schema_field() -> None:
    used = {f for v in MAPPING.values() for f in ((v,) if isinstance(v, str) else v)}
    assert set(schema_fields()) - used == set()


def test_checker_catches_a_documented_but_unmapped_field(tmp_path: Path) -> None:
    doc = tmp_path / "m.md"
    doc.write_text(
        "# T\n\n## Target\n\n| target | dlpfwd |\n|---|---|\n| `a` | `id` |\n| `b` | `title` |\n| `c` | `nope` |\n"
    )
    with pytest.raises(AssertionError) as err:
        check_mapping_table(doc, "Target", {"a": "id", "d": "severity"})
    message = str(err.value)
    assert "documented b <- title is not mapped in code" in message
    assert "'nope' is not a dlpfwd schema field" in message
    assert "code maps d <- severity but 'Target' does not document it" in message


def test_checker_accepts_multi_field_cells_and_constants(tmp_path: Path) -> None:
    doc = tmp_path / "m.md"
    doc.write_text(
        "## X\n\n| t | f |\n|---|---|\n| `k` | (constant) 1 |\n| `a` | `user.upn`, `user.display_name` |\n\n## Y\n"
    )
    check_mapping_table(doc, "X", {"a": ("user.display_name", "user.upn")}, constants={"k": 1})
    with pytest.raises(AssertionError, match="code constant z is not documented"):
        check_mapping_table(doc, "X", {"a": ("user.display_name", "user.upn")}, constants={"k": 1, "z": 2})


def test_ocsf_finding_shape() -> None:
    events = {e.id: to_dict(e) for e in sample_events()}
    match = to_ocsf(events["5f7a9c1e-0000-4000-8000-000000000001"])
    assert match["class_uid"] == 2006 and match["type_uid"] == 200601
    assert match["severity_id"] == 4 and match["disposition_id"] == 2
    assert match["time"] == 1795166102000  # 2026-11-20T09:15:02Z in ms
    assert match["data_security"]["policy"] == {"uid": "11111111-2222-3333-4444-555555555555", "name": "PCI outbound"}
    assert match["unmapped"]["recipients"] == ["partner@fabrikam.example"]
    incident = to_ocsf(events["42"])
    assert incident["activity_id"] == 3 and incident["status_id"] == 4
    alert = to_ocsf(events["da637f9a1b2c3d4e5f"])
    assert alert["activity_id"] == 2 and alert["status_id"] == 2
    empty = to_ocsf(events["empty-1"])
    assert empty["severity_id"] == 0 and empty["finding_info"]["uid"] == "empty-1"
    endpoint = to_ocsf(events["5f7a9c1e-0000-4000-8000-000000000003"])
    assert {h["algorithm_id"] for h in endpoint["file"]["hashes"]} == {2, 3}
    assert endpoint["src_endpoint"]["ip"] == "10.1.2.3"
