"""``dlpfwd backfill`` and ``dlpfwd check --probe`` on our sources, through the real CLI, against
the tenant emulator."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson

from emulators.tenant import EmulatorConfig, TenantEmulator
from forwarder.cli import main
from tests.sources.emulated import config_text, delivered, management_activity_source, serve


def _config_file(emu: TenantEmulator, server: Any, tmp_path: Path, window_hours: float) -> Path:
    """``tmp_path/dlpfwd.toml``: the emulator's Management Activity source "o365" in
    ``window_hours`` backfill windows."""
    path = tmp_path / "dlpfwd.toml"
    path.write_text(
        config_text(emu, server, tmp_path, [management_activity_source(emu, server, window_hours=window_hours)])
    )
    return path


def test_backfill_command_progress_and_rerun(tmp_path, capsys):
    emu = TenantEmulator(
        EmulatorConfig(seed=51, audit_records=300, days=3, records_per_blob=20), state_dir=tmp_path / "emu"
    )
    with serve(emu) as server:
        path = _config_file(emu, server, tmp_path, window_hours=12)
        now = dt.datetime.fromtimestamp(emu.clock.time(), dt.UTC).replace(microsecond=0)
        since = (now - dt.timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
        until = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        code = main(["--config", str(path), "backfill", "--source", "o365", "--since", since, "--until", until])
        err = capsys.readouterr().err
        assert code == 0, err
        assert "rate=" in err and "records=" in err and "/8 (" in err  # windows done/total
        assert {e["id"][6:] for e in delivered(tmp_path)} == emu.expected_audit_ids()
        # The same command again: the backfill's cursor is at its end; nothing is read twice.
        code = main(["--config", str(path), "backfill", "--source", "o365", "--since", since, "--until", until])
        assert code == 0
        ids = [e["id"] for e in delivered(tmp_path)]
        assert len(ids) == len(set(ids)) == 300
        # check --probe: every token acquired, every endpoint probed.
        assert main(["--config", str(path), "check", "--probe"]) == 0
        emu.set_roles("https://manage.office.com", [])
        assert main(["--config", str(path), "check", "--probe"]) == 1
        out = capsys.readouterr()
        assert "ActivityFeed.Read" in out.out + out.err


def test_backfill_with_relative_times_resumes_when_the_same_command_is_rerun(tmp_path, capsys, monkeypatch):
    """``--since 2d`` (and no ``--until``: now) resolve to another range at every run, and the
    range is the backfill's resume key: the resolved range is remembered for the command line
    until the backfill completes, so rerunning the same command continues it."""
    import forwarder.cli.core_commands as core
    from forwarder.state.sqlite import SqliteStateStore

    emu = TenantEmulator(
        EmulatorConfig(seed=52, audit_records=300, days=1, records_per_blob=20), state_dir=tmp_path / "emu"
    )
    ranges: list[tuple[dt.datetime, dt.datetime]] = []
    real = core._forwarder

    def interrupted_once(config, host):
        fw = real(config, host)
        backfill = fw.backfill

        def spy(source, since, until, sink=None, progress=None):
            ranges.append((since, until))

            def interrupting(info):
                progress(info)
                if len(ranges) == 1 and info.get("read", 0) >= 100:
                    raise KeyboardInterrupt  # Ctrl-C halfway through the first run

            return backfill(source, since, until, sink=sink, progress=interrupting)

        fw.backfill = spy
        return fw

    monkeypatch.setattr(core, "_forwarder", interrupted_once)
    with serve(emu) as server:
        path = _config_file(emu, server, tmp_path, window_hours=6)
        command = ["--config", str(path), "backfill", "--source", "o365", "--since", "2d"]
        assert main(command) == 130
        first = {e["id"] for e in delivered(tmp_path)}
        assert 0 < len(first) < 300
        code = main(command)
        err = capsys.readouterr().err
        assert code == 0, err
        assert "continuing the unfinished backfill" in err
        assert ranges[1] == ranges[0]  # the same range, hence the same resume key
        ids = [e["id"] for e in delivered(tmp_path)]
        assert len(ids) == len(set(ids)) and {i[6:] for i in ids} == emu.expected_audit_ids()
        # Completed: forgotten, so the same command line later backfills up to its own now.
        state = SqliteStateStore(str(tmp_path / "state"))
        try:
            assert state.kv("backfill:ranges").get(orjson.dumps(["o365", "", "2d", "now"]).decode()) is None
        finally:
            state.close()
