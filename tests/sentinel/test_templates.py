"""packaging/sentinel: ARM templates well-formed and consistent with the sink's column mapping."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sinks.sentinel.columns import COLUMNS, STREAM, TABLE, TABLE_TYPES

ROOT = Path(__file__).resolve().parents[2] / "packaging" / "sentinel"
KQL_KEYWORDS = {"PurviewDLP_CL"}


def load(name: str) -> dict:
    return json.loads((ROOT / name).read_text(encoding="utf-8"))


def resource(template: dict, rtype: str) -> dict:
    (found,) = [r for r in template["resources"] if r["type"] == rtype]
    return found


def test_deployment_template_shape():
    tpl = load("azuredeploy.json")
    assert tpl["$schema"].endswith("deploymentTemplate.json#")
    types = {r["type"]: r["apiVersion"] for r in tpl["resources"]}
    assert types == {
        "Microsoft.OperationalInsights/workspaces/tables": "2022-10-01",
        "Microsoft.Insights/dataCollectionEndpoints": "2023-03-11",
        "Microsoft.Insights/dataCollectionRules": "2023-03-11",
        "Microsoft.Authorization/roleAssignments": "2022-04-01",
    }
    # every parameter and variable referenced exists
    text = json.dumps(tpl)
    for name in re.findall(r"parameters\('([^']+)'\)", text):
        assert name in tpl["parameters"], name
    for name in re.findall(r"variables\('([^']+)'\)", text):
        assert name in tpl["variables"], name
    assert set(tpl["outputs"]) == {"endpoint", "dcr_immutable_id", "stream"}


def test_table_columns_equal_the_sink_mapping():
    table = resource(load("azuredeploy.json"), "Microsoft.OperationalInsights/workspaces/tables")
    schema = table["properties"]["schema"]
    assert schema["name"] == TABLE and TABLE.endswith("_CL")
    assert [(c["name"], c["type"]) for c in schema["columns"]] == [(c.name, TABLE_TYPES[c.type]) for c in COLUMNS]
    assert all(c["description"] for c in schema["columns"])


def test_dcr_stream_declaration_and_flow_equal_the_sink_mapping():
    tpl = load("azuredeploy.json")
    dcr = resource(tpl, "Microsoft.Insights/dataCollectionRules")["properties"]
    declared = dcr["streamDeclarations"][STREAM]["columns"]
    assert [(c["name"], c["type"]) for c in declared] == [(c.name, c.type) for c in COLUMNS]
    (flow,) = dcr["dataFlows"]
    assert flow["streams"] == [STREAM] and flow["outputStream"] == f"Custom-{TABLE}"
    assert flow["transformKql"].startswith("source")
    destinations = {d["name"] for d in dcr["destinations"]["logAnalytics"]}
    assert set(flow["destinations"]) <= destinations
    assert dcr["dataCollectionEndpointId"] == "[variables('dceId')]"
    assert "Microsoft.Insights/dataCollectionEndpoints" in tpl["variables"]["dceId"]


def test_role_assignment_is_monitoring_metrics_publisher_on_the_dcr():
    tpl = load("azuredeploy.json")
    role = resource(tpl, "Microsoft.Authorization/roleAssignments")
    assert "3913510d-42f4-4e42-8a64-420c390055eb" in tpl["variables"]["monitoringMetricsPublisher"]
    assert role["properties"]["roleDefinitionId"] == "[variables('monitoringMetricsPublisher')]"
    assert "dataCollectionRules" in role["scope"] and role["condition"]


def kql_files() -> list[Path]:
    return sorted((ROOT / "kql").glob("*.kql"))


@pytest.mark.parametrize("path", kql_files(), ids=lambda p: p.name)
def test_kql_uses_only_known_columns(path: Path):
    text = "\n".join(line.split("//")[0] for line in path.read_text(encoding="utf-8").splitlines())
    text = re.sub(r'"[^"]*"', '""', text)  # string literals are values, not columns
    assert "PurviewDLP_CL" in text
    known = {c.name for c in COLUMNS} | KQL_KEYWORDS
    defined = set(re.findall(r"\b([A-Z][A-Za-z0-9_]*)\s*=(?!=)", text))
    for name in re.findall(r"\b[A-Z][A-Za-z0-9_]*\b", text):
        assert name in known or name in defined, f"{path.name}: unknown column {name}"
    assert text.count("(") == text.count(")")


def test_analytics_rule_embeds_the_kql_file_and_maps_projected_columns():
    tpl = load("analytics-rule.json")
    (rule,) = tpl["resources"]
    props = rule["properties"]
    assert rule["kind"] == "Scheduled"
    query = (ROOT / "kql" / "analytics-rule-high-severity.kql").read_text(encoding="utf-8")
    assert props["query"] == query
    project = query.split("| project", 1)[1]
    projected = set(re.findall(r"[A-Za-z][A-Za-z0-9_]*", project))
    for mapping in props["entityMappings"]:
        for field in mapping["fieldMappings"]:
            assert field["columnName"] in projected
    for column in props["customDetails"].values():
        assert column in projected
    for placeholder in re.findall(r"\{\{(\w+)\}\}", json.dumps(props["alertDetailsOverride"])):
        assert placeholder in projected
    # the period covers the ingestion delay the query allows for
    assert props["queryPeriod"] == "PT25H" and "ingestion_time()" in query


def test_dcr_transform_uses_only_functions_transformations_support():
    # a subset of the documented list (data-collection-transformations-kql); coalesce is not on it
    supported = {"iif", "isnull", "isnotnull", "now", "todatetime", "tostring", "toint", "tolong", "tobool", "case"}
    dcr = resource(load("azuredeploy.json"), "Microsoft.Insights/dataCollectionRules")["properties"]
    (flow,) = dcr["dataFlows"]
    used = set(re.findall(r"([A-Za-z_]+)\s*\(", flow["transformKql"]))
    assert used <= supported, used - supported
    assert not re.search(r"\|\s*(summarize|join|union|mv-expand|mv-apply|top|sort)\b", flow["transformKql"])
