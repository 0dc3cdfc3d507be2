"""``content_types`` of the management_activity source must be documented content types."""

from __future__ import annotations

from pathlib import Path

import pytest

from forwarder.cli import main


def test_check_rejects_an_unknown_content_type_with_its_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "dlpfwd.toml"
    config.write_text(
        f"""
[forwarder]
state_dir = "{tmp_path / "state"}"
[[sources]]
name = "audit"
type = "management_activity"
content_types = ["DLP.All", "DLP.Nope"]
[sources.auth]
tenant_id = "00000000-0000-0000-0000-000000000001"
client_id = "00000000-0000-0000-0000-000000000002"
client_secret = "literal-for-the-test"
[[sinks]]
name = "archive"
type = "file"
path = "{tmp_path / "out.jsonl"}"
"""
    )
    assert main(["--config", str(config), "check"]) == 2
    _, err = capsys.readouterr()
    assert "sources[0].content_types[1]: expected one of 'Audit.AzureActiveDirectory'" in err
    assert "got 'DLP.Nope'" in err
