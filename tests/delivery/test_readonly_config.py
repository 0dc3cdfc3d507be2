"""Read-only commands (state, health, report, dead-letters list/purge) need only the state
directory of the configuration, not the service's secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forwarder.cli import main
from forwarder.state.sqlite import SqliteStateStore

VAR = "DLPFWD_TEST_READONLY_UNSET_SECRET"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(VAR, raising=False)
    state = tmp_path / "state"
    store = SqliteStateStore(str(state))
    store.register_sink("splunk")
    store.close()
    path = tmp_path / "dlpfwd.toml"
    path.write_text(
        f"""
[forwarder]
state_dir = "{state}"
[[sources]]
name = "audit"
type = "sample"
path = "{tmp_path / "events.jsonl"}"
[[sinks]]
name = "splunk"
type = "splunk_hec"
url = "https://127.0.0.1:8088"
token = "${{{VAR}}}"
"""
    )
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["state"],
        ["state", "--json"],
        ["health"],
        ["report", "--since", "7d"],
        ["dead-letters", "list", "--sink", "splunk"],
        ["dead-letters", "purge", "--sink", "splunk"],
        ["dead-letters", "list", "--source", "audit"],
    ],
)
def test_read_only_commands_run_without_the_secrets(
    config: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert VAR not in os.environ
    code = main(["--config", str(config), *argv])
    _, err = capsys.readouterr()
    assert code in (0, 1), err  # 1: report/health may find something; never 2 (configuration)
    assert "is not set" not in err and "invalid" not in err


def test_commands_that_connect_still_need_the_secrets(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "check"]) == 2
    _, err = capsys.readouterr()
    assert f"environment variable {VAR} is not set" in err


def test_a_bad_forwarder_table_is_still_reported_with_its_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dlpfwd.toml"
    path.write_text('[forwarder]\nstate_dir = 5\nstate_dri = "x"\n')
    assert main(["--config", str(path), "state"]) == 2
    _, err = capsys.readouterr()
    assert "forwarder.state_dir: expected a string" in err and "forwarder.state_dri: unknown setting" in err
