"""The dlpfwd CLI: help, exit codes, plugins listing, check, and secrets never printed."""

from __future__ import annotations

import io
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

import forwarder.cli as cli
from forwarder.hookspecs import hookimpl
from forwarder.settings import Secret, setting
from forwarder.sink import Health, Sink

from .helpers import builtin_host

SECRET = "Sup3r-Secret-Token-Value-0042"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def only_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other areas' plugins are out of scope here; the allow-list keeps them from loading.
    monkeypatch.setenv("DLPFWD_LOAD_PLUGINS", "sample,file")


def test_help_fits_one_screen(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert len(out.splitlines()) <= 40, out
    assert max(len(line) for line in out.splitlines()) <= 80
    for command in ("run", "backfill", "check", "plugins", "version"):
        assert f"    {command}" in out
    assert "Exit codes" in out


def test_no_command_is_a_usage_error(capsys) -> None:
    code, out, _ = run_cli(capsys)
    assert code == 2 and "usage: dlpfwd" in out


def test_version(capsys) -> None:
    code, out, _ = run_cli(capsys, "version")
    assert code == 0 and out.startswith("dlpfwd 0.") and "event schema 1.0" in out


def test_plugins_lists_kind_name_version_module(capsys) -> None:
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "VERSION", "MODULE"]
    rows = {tuple(line.split()[:2]): line.split() for line in lines[1:]}
    assert rows[("sink", "file")][3] == "sinks.file"
    assert rows[("source", "sample")][3] == "sources.sample"
    assert ("normalizer", "sample") in rows
    assert rows[("command", "run")][3] == "forwarder.cli.core_commands"
    code, out, _ = run_cli(capsys, "plugins", "--json", "--settings")
    data = orjson.loads(out)
    assert {"kind": "sink", "name": "file"}.items() <= next(r for r in data if r["name"] == "file").items()


def test_plugins_settings_describes_each_type(capsys) -> None:
    code, out, _ = run_cli(capsys, "plugins", "--settings")
    assert "[sink file]" in out and "layout (str, default 'native')" in out
    assert "[source sample]" in out


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "dlpfwd.toml"
    path.write_text(body)
    return path


def test_check_valid_configuration(tmp_path: Path, capsys) -> None:
    records = tmp_path / "r.jsonl"
    records.write_text("")
    cfg = write_config(
        tmp_path,
        f"[[sources]]\nname='replay'\ntype='sample'\npath='{records}'\n"
        f"[[sinks]]\nname='archive'\ntype='file'\npath='{tmp_path}/out/x.jsonl'\n",
    )
    code, out, err = run_cli(capsys, "--config", str(cfg), "check")
    assert code == 0, err
    assert "valid" in out and "replay (sample)" in out and "archive (file)" in out
    code, out, err = run_cli(capsys, "check", "--probe", "--config", str(cfg))
    assert code == 0, out + err
    assert "ok   sink archive: directory writable" in out


def test_config_from_environment_variable(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path, "[forwarder]\nlog_level='warning'\n")
    monkeypatch.setenv("DLPFWD_CONFIG", str(cfg))
    code, out, _ = run_cli(capsys, "check")
    assert code == 0 and str(cfg) in out


def test_check_invalid_configuration_lists_every_problem_and_exits_2(tmp_path: Path, capsys) -> None:
    cfg = write_config(
        tmp_path,
        "[forwarder]\nlog_level='loud'\n[[sinks]]\nname='a'\ntype='file'\nlayout='xml'\n[[sinks]]\nname='b'\ntype='nope'\n",
    )
    code, out, err = run_cli(capsys, "--config", str(cfg), "check")
    assert code == 2
    assert "forwarder.log_level: expected one of" in err
    assert "sinks[0].path: required setting is missing" in err
    assert "sinks[0].layout: expected one of 'native', 'ocsf', got 'xml'" in err
    assert "sinks[1].type: expected an installed sink type" in err


def test_missing_config_is_exit_2(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "--config", str(tmp_path / "none.toml"), "check")
    assert code == 2 and "configuration file not found" in err


def test_backfill_validates_its_arguments(tmp_path: Path, capsys) -> None:
    cfg = write_config(tmp_path, "")
    code, _, err = run_cli(capsys, "--config", str(cfg), "backfill", "--source", "x", "--since", "2d", "--until", "1d")
    assert code == 2 and "no source named 'x'" in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["backfill", "--source", "x", "--since", "yesterday-ish"])
    assert exit_info.value.code == 2


# --------------------------------------------------------------------------- secrets


@dataclass
class LeakySettings:
    token: Secret = setting(doc="a credential")
    url: str = setting("", doc="endpoint")


class LeakySink(Sink):
    """A careless sink that puts its credential into every error message."""

    settings_class = LeakySettings

    def connect(self) -> None:
        raise RuntimeError(f"login refused for token {self.settings.token.reveal()}")

    def write_batch(self, entries):
        raise RuntimeError(f"write failed with token {self.settings.token.reveal()}")

    def health(self) -> Health:
        return Health().add("token", False, f"token {self.settings.token.reveal()} rejected")


def leaky_module() -> types.ModuleType:
    module = types.ModuleType("leaky_plugin")

    @hookimpl
    def dlpfwd_register_sinks(register: Callable[[str, type], None]) -> None:
        register("leaky", LeakySink)

    module.dlpfwd_register_sinks = dlpfwd_register_sinks  # type: ignore[attr-defined]
    return module


@pytest.fixture
def leaky_host(monkeypatch: pytest.MonkeyPatch):
    def build(allow, strict=False):
        host = builtin_host(collect=False)
        host.load_module("core_commands", "forwarder.cli.core_commands")
        host.register_object("leaky", leaky_module())
        host.collect()
        return host

    monkeypatch.setattr(cli, "build_host", build)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


def test_secret_never_printed_by_check_probe(tmp_path: Path, capsys, monkeypatch, leaky_host) -> None:
    monkeypatch.setenv("LEAKY_TOKEN", SECRET)
    cfg = write_config(tmp_path, "[[sinks]]\nname='l'\ntype='leaky'\ntoken='${LEAKY_TOKEN}'\n")
    code, out, err = run_cli(capsys, "--config", str(cfg), "check", "--probe")
    assert code == 1
    assert "FAIL sink l" in out and "***" in out
    assert_no_secret(out, err)


def test_literal_secret_never_printed_and_warned_about(tmp_path: Path, capsys, leaky_host) -> None:
    cfg = write_config(tmp_path, f"[[sinks]]\nname='l'\ntype='leaky'\ntoken='{SECRET}'\n")
    code, out, err = run_cli(capsys, "--config", str(cfg), "check")
    assert code == 0
    assert "sinks[0].token is a literal secret" in err
    assert_no_secret(out, err)


def test_secret_never_printed_in_config_errors(tmp_path: Path, capsys, leaky_host) -> None:
    cfg = write_config(
        tmp_path,
        f"[[sinks]]\nname='l'\ntype='leaky'\ntoken='{SECRET}'\nurl=7\ntokne='{SECRET}'\n"
        f"[[sinks]]\nname='m'\ntype='file'\npath='x'\nlayout='https://u:{SECRET}@host'\n",
    )
    code, out, err = run_cli(capsys, "--config", str(cfg), "check")
    assert code == 2
    assert "sinks[0].url: expected a string" in err and "sinks[0].tokne: unknown setting" in err
    assert "sinks[1].layout" in err
    assert_no_secret(out, err)


def test_secret_never_printed_by_plugins_or_run(tmp_path: Path, capsys, monkeypatch, leaky_host) -> None:
    monkeypatch.setenv("LEAKY_TOKEN", SECRET)
    records = tmp_path / "r.jsonl"
    records.write_text('{"kind": "sample", "data": {"id": "e1", "title": "t"}}\n')
    cfg = write_config(
        tmp_path,
        f"[forwarder]\nstate_dir='{tmp_path}/state'\n"
        f"[[sources]]\nname='s'\ntype='sample'\npath='{records}'\n"
        "[[sinks]]\nname='l'\ntype='leaky'\ntoken='${LEAKY_TOKEN}'\n[sinks.retry]\ninitial=0.01\nmaximum=0.02\n",
    )
    code, out, err = run_cli(capsys, "--config", str(cfg), "plugins")
    assert code == 0 and "leaky" in out
    assert_no_secret(out, err)
    pytest.importorskip("forwarder.runtime")
    code, out, err = run_cli(capsys, "--config", str(cfg), "--log-level", "debug", "run", "--once")
    assert code == 1
    assert_no_secret(out, err)


def test_strict_plugins_exit_3(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def build(allow, strict=False):
        host = builtin_host(collect=False)
        host.load_module("core_commands", "forwarder.cli.core_commands")
        host.load_module("ghost", "no_such_plugin_module")
        host.collect()
        return host

    monkeypatch.setattr(cli, "build_host", build)
    code, _, err = run_cli(capsys, "--strict-plugins", "version")
    assert code == 3 and "plugin ghost (no_such_plugin_module) failed to load" in err
    code, out, err = run_cli(capsys, "version")
    assert code == 0 and "failed to load" in err
    code, out, _ = run_cli(capsys, "plugins")
    assert "FAILED" in out and "ghost" in out


def test_console_script_runs(tmp_path: Path) -> None:
    import subprocess

    script = Path(sys.executable).parent / "dlpfwd"
    if not script.exists():
        pytest.skip("dlpfwd console script not installed in this environment")
    env = {"PATH": "/usr/bin:/bin", "DLPFWD_LOAD_PLUGINS": "file,sample", "HOME": str(tmp_path)}
    proc = subprocess.run([str(script), "version"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("dlpfwd ")


def test_backfill_runs_and_shows_progress(tmp_path: Path, capsys) -> None:
    pytest.importorskip("forwarder.runtime")
    records = tmp_path / "r.jsonl"
    records.write_text(
        '{"id": "in", "event_time": "2026-02-01T00:00:00Z"}\n{"id": "out", "event_time": "2025-02-01T00:00:00Z"}\n'
    )
    out = tmp_path / "out.jsonl"
    cfg = write_config(
        tmp_path,
        f"[forwarder]\nstate_dir='{tmp_path}/state'\n[[sources]]\nname='replay'\ntype='sample'\npath='{records}'\n"
        f"[[sinks]]\nname='archive'\ntype='file'\npath='{out}'\n",
    )
    code, _, err = run_cli(
        capsys, "--config", str(cfg), "backfill", "--source", "replay", "--since", "2026-01-01", "--until", "2026-03-01"
    )
    assert code == 0, err
    assert "backfill: " in err
    assert [orjson.loads(line)["id"] for line in out.read_text().splitlines()] == ["in"]


def test_progress_line_on_a_terminal_and_in_a_log() -> None:
    import io

    from forwarder.cli.core_commands import Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    progress = Progress(tty)
    progress({"done": 1, "total": 4, "read": 10})
    progress({"done": 4, "total": 4, "read": 40})
    progress.finish()
    assert tty.getvalue().count("\r") == 2 and "4/4 (100%) read=40" in tty.getvalue()
    assert tty.getvalue().endswith("\n")
    pipe = io.StringIO()
    Progress(pipe)({"done": 2, "total": 8})
    assert pipe.getvalue() == "backfill: 2/8 (25%)\n"


def test_peek_secrets_registers_credentials_but_not_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forwarder.logs import redact

    monkeypatch.setenv("PEEK_TEST_SECRET", "env-held-secret-9876")
    cfg = write_config(
        tmp_path,
        "[[sources]]\n[sources.auth]\nclient_secret='${PEEK_TEST_SECRET}'\nprivate_key='/etc/dlpfwd/app-key.pem'\n"
        "[[sinks]]\ntoken='literal-hec-token-5432'\ntoken_url='https://login.example/token'\n",
    )
    assert cli.peek_secrets(str(cfg)) == 2
    text = redact("env-held-secret-9876 literal-hec-token-5432 /etc/dlpfwd/app-key.pem https://login.example/token")
    assert text == "*** *** /etc/dlpfwd/app-key.pem https://login.example/token"


def test_check_show_prints_the_effective_configuration_with_secrets_redacted(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOW_HASH_KEY", SECRET)
    cfg = write_config(
        tmp_path,
        "[policy]\nsensitive_values='hash'\nhash_key='${SHOW_HASH_KEY}'\n"
        f"[[sinks]]\nname='archive'\ntype='file'\npath='{tmp_path}/o.jsonl'\n",
    )
    code, out, err = run_cli(capsys, "--config", str(cfg), "check", "--show")
    assert code == 0, err
    shown = orjson.loads(out[out.index("{") :])
    assert shown["policy"] == {"sensitive_values": "hash", "hash_key": "***"}
    sink = shown["sinks"][0]
    assert sink["layout"] == "native" and sink["batch"]["max_events"] == 500 and sink["fsync"] is True
    assert_no_secret(out, err)


def test_check_warns_about_allow_listed_plugins_that_are_not_installed(tmp_path: Path, capsys) -> None:
    cfg = write_config(tmp_path, "[forwarder]\nplugins = ['file', 'splunk']\n")
    code, out, err = run_cli(capsys, "--config", str(cfg), "check")
    assert code == 0
    assert "forwarder.plugins[1]: 'splunk' is not an installed plugin" in err
    assert "plugins[0]" not in err


def test_check_warns_about_an_empty_pipeline(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "--config", str(write_config(tmp_path, "")), "check")
    assert code == 0 and "no [[sources]] configured" in err and "no [[sinks]] configured" in err


@pytest.mark.parametrize("command", ["run", "backfill", "check", "plugins", "version"])
def test_every_command_help_names_the_exit_codes(capsys, command: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "Exit codes: 0 ok, 1 undelivered" in out and "2 usage/config error" in out, out


class RolesSink(LeakySink):
    """A sink whose health names its token check "token" and lists the token's roles."""

    def connect(self) -> None:
        pass

    def health(self) -> Health:
        return Health().add("token", True, "roles: ActivityFeed.Read, ActivityFeed.ReadDlp")


def test_check_probe_prints_a_token_check_in_full(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("roles_plugin")

    @hookimpl
    def dlpfwd_register_sinks(register: Callable[[str, type], None]) -> None:
        register("roles", RolesSink)

    module.dlpfwd_register_sinks = dlpfwd_register_sinks  # type: ignore[attr-defined]

    def build(allow, strict=False):
        host = builtin_host(collect=False)
        host.load_module("core_commands", "forwarder.cli.core_commands")
        host.register_object("roles", module)
        host.collect()
        return host

    monkeypatch.setattr(cli, "build_host", build)
    monkeypatch.setenv("ROLES_TOKEN", SECRET)
    cfg = write_config(tmp_path, "[[sinks]]\nname='r'\ntype='roles'\ntoken='${ROLES_TOKEN}'\n")
    code, out, err = run_cli(capsys, "--config", str(cfg), "check", "--probe")
    assert code == 0, out + err
    assert "ok   sink r: token: roles: ActivityFeed.Read, ActivityFeed.ReadDlp" in out
    assert_no_secret(out, err)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_backfill_progress_on_a_terminal_never_wraps_and_keeps_the_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    from forwarder.cli.core_commands import Progress

    monkeypatch.setenv("COLUMNS", "80")
    terminal = _Terminal()
    progress = Progress(terminal)
    long_tail = {"content_type": "DLP.All", "window_end": "2026-11-23T17:13:06.678101Z", "normalized": 150}
    progress({"done": 1, "total": 3, "read": 50, "spooled": 50, "rate": 1240, **long_tail})
    progress({"batches": 4, "read": 150, "spooled": 150, "duplicates": 0, "quarantined": 0, **long_tail})
    progress.finish()
    lines = [segment.removesuffix("\x1b[K") for segment in terminal.getvalue().strip("\n").split("\r")[1:]]
    assert len(lines) == 2 and all(len(line) < 80 for line in lines), lines
    assert lines[1].startswith("backfill: 1/3 (33%) read=150 spooled=150"), lines[1]


def test_backfill_progress_to_a_pipe_has_every_field() -> None:
    from forwarder.cli.core_commands import Progress

    pipe = io.StringIO()
    Progress(pipe)({"done": 2, "total": 4, "read": 9, "content_type": "DLP.All"})
    assert pipe.getvalue() == "backfill: 2/4 (50%) read=9 content_type=DLP.All\n"


def test_output_piped_into_a_reader_that_left_is_not_an_error(tmp_path: Path) -> None:
    import os
    import subprocess

    root = Path(__file__).resolve().parents[2]
    code = "import sys; from forwarder.cli import main; sys.exit(main())"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "DLPFWD_LOAD_PLUGINS": "sample,file"}
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `dlpfwd plugins | head` after head has exited: every write fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, "plugins", "--settings"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
    finally:
        os.close(write_end)
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "BrokenPipeError" not in stderr and "Traceback" not in stderr, stderr


#: Commands whose --help must fit one 80x40 screen.
ONE_SCREEN = (
    "run backfill check plugins version state dead-letters report health demo emulator "
    "hec-emulator logs-ingestion-emulator servicenow-emulator incidents correlation writeback permissions"
).split()


def test_every_command_help_fits_one_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DLPFWD_LOAD_PLUGINS")
    monkeypatch.setenv("COLUMNS", "80")
    import argparse

    parser = cli.build_parser(cli.build_host(None))
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    too_long = {}
    for name in ONE_SCREEN:
        if name in sub.choices:
            lines = sub.choices[name].format_help().splitlines()
            if len(lines) > 40 or max(map(len, lines)) > 80:
                too_long[name] = len(lines)
    assert not too_long, too_long


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_backfill_says_so_and_exits_130(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    import os
    import signal

    import forwarder.cli.core_commands as core

    class Interrupted:
        closed = False

        def backfill(self, *args: object, **kwargs: object) -> None:
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)  # handled at once, in this (the main) thread
            raise KeyboardInterrupt

        def close(self) -> None:
            Interrupted.closed = True

    monkeypatch.setattr(core, "_forwarder", lambda config, host: Interrupted())
    records = tmp_path / "r.jsonl"
    records.write_text("")
    cfg = write_config(
        tmp_path,
        f"[forwarder]\nstate_dir='{tmp_path / 's'}'\n[[sources]]\nname='replay'\ntype='sample'\npath='{records}'\n",
    )
    before = signal.getsignal(signal.SIGTERM)
    code, out, err = run_cli(capsys, "--config", str(cfg), "backfill", "--source", "replay", "--since", "1d")
    assert code == 130, out + err
    assert "dlpfwd backfill: interrupted" in err and "run the same backfill again" in err
    assert Interrupted.closed and signal.getsignal(signal.SIGTERM) is before


def test_a_command_interrupted_by_ctrl_c_exits_130(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import forwarder.cli.core_commands as core

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(core, "_version", interrupted)
    code, _, err = run_cli(capsys, "version")
    assert code == 130 and "dlpfwd version: interrupted" in err
