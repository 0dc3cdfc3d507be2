"""The correlation enrichment in CEF and LEEF: the documented keys, present only on enriched
events, the failure flag, and the message-size rules (ids cut, counts never)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from forwarder.schema import to_json
from sinks.syslog.cef import format_cef
from sinks.syslog.leef import LeefFormatter
from sinks.syslog.truncate import MARKER
from tests.syslog.helpers import sample_event
from tests.syslog.parsers import parse_cef, parse_leef

CORRELATION = {
    "status": "ok",
    "related_alerts": [
        {"id": "da638-1", "title": "USB copy", "severity": "medium", "service_source": "microsoftDefenderForEndpoint"},
        {"id": "da638-2", "title": "Phish", "severity": "high", "service_source": "microsoftDefenderForOffice365"},
        {"id": "da638-3", "title": "Odd", "severity": "low", "service_source": "microsoftDefenderForIdentity"},
    ],
    "related_events": [],
    "related_count": 7,
    "incidents": ["2001", "2002"],
    "prior_incidents": {"count": 2, "ids": ["1990", "1991"]},
    "entities": {"users": [], "devices": [], "files": []},
    "links": {"alerts": [], "incidents": []},
}


def data(enrichment: dict[str, Any]) -> dict[str, Any]:
    event = sample_event(3)
    event.enrichment = enrichment
    return dict(orjson.loads(to_json(event)))


def cef_ext(d: dict[str, Any], budget: int = 8192) -> dict[str, str]:
    return parse_cef(format_cef(d, budget))[1]


def leef_attrs(d: dict[str, Any], budget: int = 8192) -> dict[str, str]:
    return parse_leef(LeefFormatter("^").format(d, budget))[1]


def test_cef_carries_the_enrichment_in_the_documented_keys() -> None:
    ext = cef_ext(data({"correlation": CORRELATION}))
    assert ext["cn2Label"] == "Related Alert Count" and ext["cn2"] == "7"
    assert ext["cn3Label"] == "Prior Incident Count" and ext["cn3"] == "2"
    assert ext["dlpfwdRelatedAlertIds"] == "da638-1;da638-2;da638-3"
    assert ext["dlpfwdRelatedMaxSeverity"] == "high"
    assert ext["dlpfwdIncidentIds"] == "2001;2002"
    assert ext["dlpfwdEnrichment"] == "ok"


def test_leef_carries_the_enrichment_in_the_documented_keys() -> None:
    attrs = leef_attrs(data({"correlation": CORRELATION}))
    assert attrs["relatedAlertIds"] == "da638-1;da638-2;da638-3"
    assert attrs["relatedAlertCount"] == "7"
    assert attrs["relatedMaxSeverity"] == "high"
    assert attrs["incidentIds"] == "2001;2002"
    assert attrs["priorIncidentCount"] == "2"
    assert attrs["enrichment"] == "ok"


ENRICHMENT_KEYS_CEF = {"cn2", "cn3", "dlpfwdRelatedAlertIds", "dlpfwdRelatedMaxSeverity", "dlpfwdIncidentIds"}
ENRICHMENT_KEYS_LEEF = {"relatedAlertIds", "relatedAlertCount", "relatedMaxSeverity", "incidentIds"}


def test_unenriched_events_carry_none_of_the_keys_and_zero_counts_are_kept() -> None:
    ext, attrs = cef_ext(data({})), leef_attrs(data({}))
    assert not ENRICHMENT_KEYS_CEF & set(ext) and "dlpfwdEnrichment" not in ext
    assert not ENRICHMENT_KEYS_LEEF & set(attrs) and "enrichment" not in attrs
    empty = {**CORRELATION, "related_alerts": [], "related_count": 0, "incidents": [], "prior_incidents": {"count": 0}}
    ext, attrs = cef_ext(data({"correlation": empty})), leef_attrs(data({"correlation": empty}))
    assert (ext["cn2"], ext["cn3"], attrs["relatedAlertCount"], attrs["priorIncidentCount"]) == ("0", "0", "0", "0")
    assert "dlpfwdRelatedAlertIds" not in ext and "relatedMaxSeverity" not in attrs


def test_a_failed_enricher_is_flagged() -> None:
    enrichment = {"errors": {"correlation": "failed: OperationalError: disk I/O error", "hr": "timed out after 5 s"}}
    assert cef_ext(data(enrichment))["dlpfwdEnrichment"] == "failed:correlation;hr"
    assert leef_attrs(data(enrichment))["enrichment"] == "failed:correlation;hr"
    assert "cn2" not in cef_ext(data(enrichment))  # no correlation: no counts


@pytest.mark.parametrize("fmt", ["cef", "leef"])
def test_long_id_lists_are_cut_to_fit_and_counts_never(fmt: str) -> None:
    many = [{"id": f"da{i:06d}-{'x' * 30}", "severity": "low"} for i in range(400)]
    d = data({"correlation": {**CORRELATION, "related_alerts": many, "related_count": 400}})
    budget = 2048
    text = format_cef(d, budget) if fmt == "cef" else LeefFormatter("^").format(d, budget)
    assert len(text.encode()) <= budget
    values = parse_cef(text)[1] if fmt == "cef" else parse_leef(text)[1]
    ids = values["dlpfwdRelatedAlertIds" if fmt == "cef" else "relatedAlertIds"]
    assert ids.endswith(MARKER) and ids.startswith("da000000-")
    assert values["cn2" if fmt == "cef" else "relatedAlertCount"] == "400"
    assert values["dlpfwdRelatedMaxSeverity" if fmt == "cef" else "relatedMaxSeverity"] == "low"


def test_free_form_enrichment_of_the_wrong_shape_does_not_break_formatting() -> None:
    odd = {"correlation": {"related_alerts": ["not-an-object", {"id": 5, "severity": None}], "related_count": "x"}}
    ext = cef_ext(data(odd))
    assert ext["dlpfwdRelatedAlertIds"] == "5" and "cn2" not in ext and ext["dlpfwdEnrichment"] == "ok"
    assert leef_attrs(data({"hr": {"department": "Sales"}}))["enrichment"] == "ok"


def test_qradar_custom_properties_extract_the_enrichment() -> None:
    import json
    import re
    from pathlib import Path

    from tests.syslog.helpers import make_sink

    spec = json.loads((Path(__file__).resolve().parents[2] / "packaging/qradar/custom-properties.json").read_text())
    props = [p for p in spec["properties"] if p["field"].startswith("enrichment.")]
    assert {p["leef"] for p in props} == {
        "relatedAlertIds",
        "relatedAlertCount",
        "relatedMaxSeverity",
        "incidentIds",
        "priorIncidentCount",
        "enrichment",
    }
    for enrichment in ({"correlation": CORRELATION}, {"errors": {"correlation": "failed: x"}}, {}):
        d = data(enrichment)
        cef = make_sink(host="127.0.0.1", format="cef", hostname="h").encode(d).decode()
        leef = make_sink(host="127.0.0.1", format="leef", hostname="h").encode(d).decode()
        ext, attrs = cef_ext(d), leef_attrs(d)
        for prop in props:
            found = re.search(prop["regex_cef"], cef)
            assert (found.group(1) if found else "") == ext.get(prop["cef"], ""), prop["name"]
            found = re.search(prop["regex_leef"], leef)
            assert (found.group(1) if found else "") == attrs.get(prop["leef"], ""), prop["name"]
        if enrichment.get("correlation"):
            assert re.search(props[0]["regex_leef"], leef) is not None
