"""``dlpfwd run`` keeps forwarding until SIGTERM/SIGINT, then finishes and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_stops_gracefully_on_signal(tmp_path: Path, signum: int) -> None:
    pytest.importorskip("forwarder.runtime")
    records = tmp_path / "records.jsonl"
    records.write_text("".join(f'{{"id": "e{i}", "title": "t"}}\n' for i in range(20)))
    out = tmp_path / "out" / "dlp.jsonl"
    config = tmp_path / "dlpfwd.toml"
    config.write_text(
        f"[forwarder]\nstate_dir = '{tmp_path / 'state'}'\nshutdown_deadline = 10\n"
        f"[[sources]]\nname = 'replay'\ntype = 'sample'\npath = '{records}'\npoll_interval = 0.2\n"
        f"[[sinks]]\nname = 'archive'\ntype = 'file'\npath = '{out}'\n[sinks.batch]\nmax_wait = 0.05\n"
    )
    env = dict(os.environ, DLPFWD_LOAD_PLUGINS="sample,file", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "forwarder", "--config", str(config), "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 20), "nothing delivered"
        with open(records, "a") as fh:  # more arrives while running
            fh.write('{"id": "late", "title": "t"}\n')
        assert wait_for(lambda: '"id":"late"' in out.read_text()), "the appended record was not delivered"
        proc.send_signal(signum)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 0, stderr
    assert len(out.read_text().splitlines()) == 21
    # An operator sees that it started, with what, and that it stopped.
    assert "running: sources replay (sample); sinks archive (file)" in stderr, stderr
    assert "dlpfwd stopped (exit 0)" in stderr, stderr
