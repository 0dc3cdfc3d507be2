"""load_config: every problem at once, with its key path; secrets from ${ENV} / file: refs."""

from __future__ import annotations

from pathlib import Path

import pytest

from forwarder.config import literal_secrets, load_config
from forwarder.errors import ConfigError
from forwarder.logs import redact
from forwarder.settings import Secret

from .helpers import builtin_host

GOOD = """
[forwarder]
state_dir = "{state}"

[policy]
sensitive_values = "hash"
hash_key = "${{DLPFWD_TEST_HASH_KEY}}"

[[sources]]
name = "replay"
type = "sample"
poll_interval = 5
path = "{records}"

[[sinks]]
name = "archive"
type = "file"
path = "{out}/dlp-%Y%m%d.jsonl"
layout = "ocsf"
carry_raw = false
[sinks.batch]
max_events = 100
[sinks.filter]
kinds = ["audit", "alert"]
sources = ["replay"]
"""


@pytest.fixture
def host():
    return builtin_host()


def test_a_valid_configuration_loads(tmp_path: Path, host, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLPFWD_TEST_HASH_KEY", "hash-key-from-env-123")
    path = tmp_path / "dlpfwd.toml"
    path.write_text(GOOD.format(state=tmp_path / "state", records=tmp_path / "r.jsonl", out=tmp_path))
    config = load_config(path, host)
    assert config.path == str(path)
    assert config.source("replay").options.poll_interval == 5
    assert config.source("replay").settings.path.endswith("r.jsonl")
    sink = config.sink("archive")
    assert sink.settings.layout == "ocsf" and sink.options.batch.max_events == 100
    assert sink.options.carry_raw is False and sink.options.filter.kinds == ["audit", "alert"]
    assert isinstance(config.policy.hash_key, Secret)
    assert config.policy.hash_key.reveal() == "hash-key-from-env-123"
    assert "hash-key-from-env-123" not in repr(config)
    # registered for redaction by the loader
    assert redact("leak hash-key-from-env-123 here") == "leak *** here"
    assert literal_secrets(config) == []


def test_text_is_accepted_as_well_as_a_path(host) -> None:
    config = load_config("[forwarder]\nlog_level = 'debug'\n", host)
    assert config.forwarder.log_level == "debug" and config.sources == [] and config.path == ""


def test_every_problem_is_reported_at_once_with_its_key_path(host) -> None:
    text = """
[forwarder]
state_dir = 7
colour = "blue"

[policy]
sensitive_values = "keep"

[[sources]]
name = "replay"
type = "sample"
poll_interval = "often"

[[sources]]
name = "replay"
type = "nonexistent"

[[sinks]]
name = "archive"
type = "file"
layout = "xml"
max_bytes = -1
[sinks.batch]
max_events = 0
[sinks.retry]
initial = "soon"
[sinks.filter]
kinds = ["audit", "gossip"]
sources = ["nowhere"]

[[sinks]]
type = "file"
path = "x"

[extras]
a = 1
"""
    with pytest.raises(ConfigError) as err:
        load_config(text, host)
    problems = err.value.problems
    expected = [
        "extras: unknown section",
        "forwarder.colour: unknown setting",
        "forwarder.state_dir: expected a string, got an integer",
        "policy.sensitive_values: expected one of 'drop', 'mask', 'hash', got 'keep'",
        "sources[0].poll_interval: expected a number, got a string",
        "sources[0].path: required setting is missing",
        "sources[1].name: 'replay' is already used by sources[0]",
        "sources[1].type: expected an installed source type (sample), got 'nonexistent'",
        "sinks[0].path: required setting is missing",
        "sinks[0].layout: expected one of 'native', 'ocsf', got 'xml'",
        "sinks[0].max_bytes: expected at least 0, got -1",
        "sinks[0].batch.max_events: expected at least 1, got 0",
        "sinks[0].retry.initial: expected a number, got a string",
        "sinks[1].name: expected a name",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in problems), f"missing {prefix!r} in {problems}"
    # filter cross-checks need the sink's options to have been read, so they appear too
    assert any(p.startswith("sinks[0].filter.kinds[1]: expected one of audit") for p in problems)
    assert any(p.startswith("sinks[0].filter.sources[0]: expected a configured source name") for p in problems)


def test_url_settings_say_what_was_expected(host) -> None:
    from dataclasses import dataclass

    from forwarder.settings import setting
    from forwarder.sink import Outcome, Sink

    @dataclass
    class UrlSettings:
        url: str = setting(doc="endpoint", url=("https",))

    class UrlSink(Sink):
        settings_class = UrlSettings

        def write_batch(self, entries):  # pragma: no cover - never called
            return Outcome()

    host.sinks["urly"] = UrlSink
    text = "[[sinks]]\nname='a'\ntype='file'\npath='x'\n[[sinks]]\nname='b'\ntype='urly'\nurl='http://plain.example'\n"
    with pytest.raises(ConfigError) as err:
        load_config(text, host)
    assert err.value.problems == ["sinks[1].url: expected an https URL, got 'http://plain.example'"]


def test_missing_secret_sources_are_reported_without_values(tmp_path: Path, host) -> None:
    text = (
        "[policy]\nsensitive_values='hash'\nhash_key='${DLPFWD_TEST_UNSET_VARIABLE}'\n"
        "[[sinks]]\nname='a'\ntype='file'\npath='x'\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(text, host)
    assert err.value.problems == ["policy.hash_key: environment variable DLPFWD_TEST_UNSET_VARIABLE is not set"]
    text2 = f"[policy]\nsensitive_values='hash'\nhash_key='file:{tmp_path}/absent'\n"
    with pytest.raises(ConfigError) as err:
        load_config(text2, host)
    assert err.value.problems[0].startswith("policy.hash_key: cannot read secret file")


def test_secret_from_a_file_and_literal_secret_warning(tmp_path: Path, host) -> None:
    key = tmp_path / "key"
    key.write_text("file-secret-value-42\n")
    config = load_config(f"[policy]\nsensitive_values='hash'\nhash_key='file:{key}'\n", host)
    assert config.policy.hash_key.reveal() == "file-secret-value-42"
    assert literal_secrets(config) == []
    literal = load_config("[policy]\nsensitive_values='hash'\nhash_key='literal-key-123'\n", host)
    assert literal_secrets(literal) == ["policy.hash_key"]


def test_hash_mode_needs_a_key(host) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("[policy]\nsensitive_values = 'hash'\n", host)
    assert err.value.problems[0].startswith("policy.hash_key: expected a secret")


def test_unreadable_inputs(tmp_path: Path, host) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "absent.toml", host)
    bad = tmp_path / "bad.toml"
    bad.write_text("[forwarder\nx=1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, host)
    with pytest.raises(ConfigError, match=r"sources: expected an array of tables"):
        load_config("sources = 3\n", host)


def test_a_type_whose_plugin_failed_to_load_says_so(host) -> None:
    host.load_module("ghost", "no.such.module")
    with pytest.raises(ConfigError) as err:
        load_config("[[sinks]]\nname='g'\ntype='ghost'\n", host)
    assert "installed but failed to load" in err.value.problems[0]
