"""``dlpfwd backfill`` and ``dlpfwd check --probe`` on our sources, through the real CLI, against
the tenant emulator."""

from __future__ import annotations

import datetime as dt

from emulators.tenant import EmulatorConfig, TenantEmulator
from forwarder.cli import main
from tests.sources.emulated import config_text, delivered, serve


def test_backfill_command_progress_and_rerun(tmp_path, capsys):
    emu = TenantEmulator(
        EmulatorConfig(seed=51, audit_records=300, days=3, records_per_blob=20), state_dir=tmp_path / "emu"
    )
    with serve(emu) as server:
        text = config_text(
            emu,
            server,
            tmp_path,
            [
                f"""
name = "o365"
type = "management_activity"
management_url = "{server.url}"
publisher_id = "{emu.publisher_id}"
window_hours = 12
"""
            ],
        )
        path = tmp_path / "dlpfwd.toml"
        path.write_text(text)
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
