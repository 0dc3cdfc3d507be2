"""docs/schema.md documents the PurviewDLP_CL mapping the sink uses; docs/sentinel.md exists and links."""

from __future__ import annotations

from pathlib import Path

from forwarder.testing import check_mapping_table
from forwarder.testing.mapping import markdown_table
from sinks.sentinel.columns import COLUMNS, COMPUTED, MAPPING

ROOT = Path(__file__).resolve().parents[2]
HEADING = "Sentinel custom table (PurviewDLP_CL)"


def test_schema_doc_table_matches_the_mapping():
    check_mapping_table(ROOT / "docs" / "schema.md", HEADING, MAPPING, constants=COMPUTED)


def test_schema_doc_table_lists_columns_in_table_order_with_types():
    rows = markdown_table(ROOT / "docs" / "schema.md", HEADING)
    assert [(r[0].strip("`"), r[2]) for r in rows] == [(c.name, c.type) for c in COLUMNS]


def test_sentinel_doc_covers_setup_and_behaviour():
    text = (ROOT / "docs" / "sentinel.md").read_text(encoding="utf-8")
    for needle in (
        "azuredeploy.json",
        "Monitoring Metrics Publisher",
        "dcr_immutable_id",
        "TrimmedFields",
        "413",
        "429",
        "IdempotencyKey",
        "logs-ingestion-emulator",
        "2023-01-01",
    ):
        assert needle in text, needle


def test_the_documented_configuration_loads(monkeypatch):
    import re

    from forwarder.config import load_config
    from forwarder.plugins import PluginHost

    text = (ROOT / "docs" / "sentinel.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    monkeypatch.setenv("DLPFWD_SENTINEL_SECRET", "s3cret")
    host = PluginHost().load(allow=["sentinel"])
    config = load_config(example, host)
    (sink,) = config.sinks
    assert sink.type == "sentinel" and sink.settings.auth.client_secret.reveal() == "s3cret"
    assert sink.settings.dcr_immutable_id.startswith("dcr-") and sink.options.batch.max_events == 500
