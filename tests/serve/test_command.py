"""``dlpfwd serve`` as a process: configuration errors with key paths, TLS required, the URL on
stderr, a signed change accepted into the state directory's inbox, SIGTERM stops it (exit 0);
and the ``[serve]`` table in the configuration loader."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from forwarder.config import literal_secrets, parse_config
from forwarder.errors import ConfigError
from forwarder.serve.settings import ServeSettings, problems
from forwarder.settings import Secret
from forwarder.state import open_store
from forwarder.sync import inbox

from .conftest import BEARER, HMAC_KEY, change, post_bearer, post_signed, trust

DLPFWD = [sys.executable, "-m", "forwarder"]


#: The graph_security source whose app applies accepted changes: nothing listens there, so the
#: changes stay pending (deferred) and the tests can read them from the inbox.
UNREACHABLE_GRAPH = """
[[sources]]
name = "graph"
type = "graph_security"
graph_url = "https://127.0.0.1:9"
[sources.auth]
tenant_id = "00000000-0000-0000-0000-000000000001"
client_id = "00000000-0000-0000-0000-000000000002"
client_secret = "not-used-in-these-tests-0123"
authority = "https://127.0.0.1:9"
"""


def write_config(tmp_path: Path, serve: str) -> Path:
    path = tmp_path / "dlpfwd.toml"
    text = f'[forwarder]\nstate_dir = "{tmp_path / "state"}"\n\n[serve]\n{serve}\n{UNREACHABLE_GRAPH}'
    path.write_text(text, encoding="utf-8")
    return path


def env() -> dict[str, str]:
    return {
        **os.environ,
        "DLPFWD_SERVE_HMAC": HMAC_KEY,
        "DLPFWD_SERVE_TOKEN": BEARER,
        "DLPFWD_LOG_LEVEL": "info",
        "PYTHONFAULTHANDLER": "1",  # a SIGABRT dumps every thread's stack (see exit_code)
    }


def exit_code(proc: subprocess.Popen[str], timeout: float = 60) -> int:
    """``proc``'s exit code once it ends; if it has not ended within ``timeout`` seconds, the
    test fails with the stacks of all its threads (faulthandler, on SIGABRT) and its stderr, so
    that a rare hang at shutdown shows where it waits."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        pytest.fail(f"dlpfwd serve did not exit within {timeout:.0f} s; its stderr and thread stacks:\n{err}")


@contextmanager
def serving(config: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [*DLPFWD, "--config", str(config), "serve", "--port", "0", *extra],
        env=env(),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    stream = proc.stderr
    lines: queue.Queue[str] = queue.Queue()

    def read_until_the_url() -> None:
        # readline in a thread: select() on the pipe misses lines already in the text buffer
        for line in stream:
            lines.put(line)
            if "listening on " in line:
                return
        lines.put("")  # the process ended

    threading.Thread(target=read_until_the_url, daemon=True).start()
    url, seen = "", []
    deadline = time.monotonic() + 30
    try:
        while not url and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not line:
                break
            seen.append(line)
            if "listening on " in line:
                url = line.rsplit("listening on ", 1)[1].strip()
        assert url, "".join(seen)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        exit_code(proc)


def test_serve_process_accepts_a_signed_change_and_stops_on_sigterm(tmp_path, certs):
    config = write_config(
        tmp_path,
        f'tls_cert = "{certs.cert}"\ntls_key = "{certs.key}"\n'
        'hmac_secret = "${DLPFWD_SERVE_HMAC}"\nbearer_token = "${DLPFWD_SERVE_TOKEN}"',
    )
    with serving(config) as (proc, url):
        assert url.startswith("https://127.0.0.1:")
        with httpx.Client(base_url=url, verify=trust(certs)) as client:
            assert client.get("/healthz").status_code == 200
            body = change()
            assert post_signed(client, body).status_code == 202
            assert post_bearer(client, change(), token="wrong-token-0123456789").status_code == 401
        port = url.rsplit(":", 1)[1]
        probe = [*DLPFWD, "--config", str(config), "serve", "--health", "--port", port]
        healthy = subprocess.run(probe, env=env(), capture_output=True, text=True, timeout=60)
        assert healthy.returncode == 0 and "ok" in healthy.stdout, healthy.stderr
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0
        assert proc.stderr is not None
        rest = proc.stderr.read()
    assert HMAC_KEY not in rest and BEARER not in rest and "wrong-token" not in rest
    assert "-> 202 accepted" in rest and "-> 401 Unauthorized" in rest
    gone = subprocess.run(probe, env=env(), capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1 and "/healthz" in gone.stderr
    store = open_store(str(tmp_path / "state"))
    try:
        (item,) = inbox.due(store, now=9e18)
        assert item.change.reference == body["changeId"]
    finally:
        store.close()


def test_serve_refuses_to_start_without_tls_or_credentials(tmp_path):
    config = write_config(tmp_path, 'port = 0\ntls_key = "/nonexistent/key.pem"')
    result = subprocess.run(
        [*DLPFWD, "--config", str(config), "serve"], env=env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "serve.tls_cert: required" in result.stderr
    assert "serve.tls_key: no such file: /nonexistent/key.pem" in result.stderr
    assert "serve: set hmac_secret or bearer_token" in result.stderr


def test_insecure_plain_http_must_be_asked_for_explicitly(tmp_path):
    config = write_config(tmp_path, 'bearer_token = "${DLPFWD_SERVE_TOKEN}"')
    with serving(config, "--insecure-plain-http") as (proc, url):
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url) as client:
            assert post_bearer(client, change()).status_code == 202
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0
        assert proc.stderr is not None
        assert "local tests only" in proc.stderr.read()


def test_serve_table_is_validated_with_key_paths(host_for_config):
    with pytest.raises(ConfigError) as caught:
        parse_config('[serve]\nport = 70000\nmax_body = 10\nbearer_tokn = "x"\nhmac_secret = "${NOPE_NOT_SET}"\n',
                     host_for_config)  # fmt: skip
    text = "\n".join(caught.value.problems)
    assert "serve.port: expected at most 65535" in text
    assert "serve.max_body: expected at least 1024" in text
    assert "serve.bearer_tokn: unknown setting (did you mean bearer_token?)" in text
    assert "serve.hmac_secret: environment variable NOPE_NOT_SET is not set" in text


def test_serve_literal_secret_is_reported_by_check(host_for_config):
    config = parse_config('[serve]\nbearer_token = "literal-token-0123456789"\n', host_for_config)
    assert isinstance(config.serve, ServeSettings) and config.serve.bearer_token
    assert "serve.bearer_token" in literal_secrets(config)


def test_settings_problems(certs):
    short = ServeSettings(tls_cert=str(certs.cert), bearer_token=Secret("short"))
    assert problems(short) == ["serve.bearer_token: expected at least 16 characters"]
    rotating = ServeSettings(
        tls_cert=str(certs.cert), hmac_previous_secret=Secret("x" * 20), bearer_token=Secret(BEARER)
    )
    assert problems(rotating) == ["serve.hmac_previous_secret: set only together with hmac_secret"]
    assert problems(ServeSettings(bearer_token=Secret(BEARER)), insecure=True) == []


@pytest.fixture
def host_for_config():
    from forwarder.cli import build_host

    return build_host(None)
