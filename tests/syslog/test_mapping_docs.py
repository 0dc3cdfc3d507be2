"""docs/schema.md's CEF and LEEF tables agree with the formatters' exported mappings."""

from __future__ import annotations

from pathlib import Path

from forwarder.testing import check_mapping_table
from sinks.syslog import CEF_MAPPING, LEEF_MAPPING
from sinks.syslog.cef import CEF_CONSTANTS
from sinks.syslog.leef import LEEF_CONSTANTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"


def test_cef_table_matches_the_formatter() -> None:
    check_mapping_table(DOC, "CEF", CEF_MAPPING, constants=("CEF Version", *CEF_CONSTANTS[1:]))


def test_leef_table_matches_the_formatter() -> None:
    check_mapping_table(DOC, "LEEF 2.0", LEEF_MAPPING, constants=LEEF_CONSTANTS)
