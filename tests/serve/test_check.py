"""``dlpfwd check`` runs the start-up checks of ``dlpfwd serve`` (TLS files loadable and
matching, a credential, the applying source) and of the status sync (``[sinks.sync] source``
resolving to one graph_security source), each problem with its key path (exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emulators.httpd import ensure_certificates
from forwarder.cli import main

from .test_command import UNREACHABLE_GRAPH, env

SECRET = 'hmac_secret = "${DLPFWD_SERVE_HMAC}"\n'


def write(tmp_path: Path, serve: str | None, rest: str = UNREACHABLE_GRAPH) -> Path:
    path = tmp_path / "dlpfwd.toml"
    text = f'[forwarder]\nstate_dir = "{tmp_path / "state"}"\n'
    if serve is not None:
        text += f"\n[serve]\n{serve}\n"
    path.write_text(text + rest, encoding="utf-8")
    return path


def check(capsys: Any, monkeypatch: Any, path: Path) -> tuple[int, str, str]:
    for name, value in env().items():
        if name.startswith("DLPFWD_SERVE"):
            monkeypatch.setenv(name, value)
    code = main(["--config", str(path), "check"])
    out, err = capsys.readouterr()
    return code, out, err


def tls(certs: Any, key: Any = None) -> str:
    return f'tls_cert = "{certs.cert}"\ntls_key = "{key or certs.key}"\n'


def test_a_valid_serve_table_passes(tmp_path, certs, capsys, monkeypatch):
    code, out, err = check(capsys, monkeypatch, write(tmp_path, tls(certs) + SECRET))
    assert code == 0, err
    assert "valid" in out


def test_a_key_that_does_not_match_the_certificate(tmp_path, certs, capsys, monkeypatch):
    _, _, other_key = ensure_certificates(tmp_path / "other")
    code, _, err = check(capsys, monkeypatch, write(tmp_path, tls(certs, other_key) + SECRET))
    assert code == 2
    assert "serve.tls_key: does not match the certificate in serve.tls_cert" in err


def test_a_certificate_that_is_not_pem(tmp_path, certs, capsys, monkeypatch):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n", encoding="utf-8")
    code, _, err = check(capsys, monkeypatch, write(tmp_path, f'tls_cert = "{junk}"\n' + SECRET))
    assert code == 2
    assert "serve.tls_cert: cannot load the certificate and its private key as PEM" in err


def test_no_certificate_no_credential_and_missing_files(tmp_path, capsys, monkeypatch):
    code, _, err = check(capsys, monkeypatch, write(tmp_path, 'tls_key = "/nonexistent/key.pem"'))
    assert code == 2
    assert "serve.tls_cert: required" in err
    assert "serve.tls_key: no such file: /nonexistent/key.pem" in err
    assert "serve: set hmac_secret or bearer_token" in err


def test_the_applying_source_must_resolve(tmp_path, certs, capsys, monkeypatch):
    two = UNREACHABLE_GRAPH + UNREACHABLE_GRAPH.replace('name = "graph"', 'name = "graph2"')
    code, _, err = check(capsys, monkeypatch, write(tmp_path, tls(certs) + SECRET, two))
    assert code == 2
    assert "serve.source: " in err and "name one of graph, graph2" in err
    code, _, err = check(capsys, monkeypatch, write(tmp_path, tls(certs) + SECRET + 'source = "graph2"', two))
    assert code == 0, err
    code, _, err = check(capsys, monkeypatch, write(tmp_path, tls(certs) + SECRET, ""))
    assert code == 2 and "serve.source: " in err and "none is configured" in err


SNOW = """
[[sinks]]
name = "snow"
type = "servicenow"
instance_url = "https://127.0.0.1:9"
username = "dlpfwd"
password = "pa55word-0123456789"
[sinks.sync]
enabled = true
{source}
"""


@pytest.mark.parametrize(
    ("sources", "source", "expected"),
    [
        ("", "", "sinks.snow.sync.source: the sync writes to Defender with a graph_security source's app; none"),
        (UNREACHABLE_GRAPH, 'source = "nope"', "sinks.snow.sync.source: no graph_security source named 'nope'"),
        (
            UNREACHABLE_GRAPH + UNREACHABLE_GRAPH.replace('name = "graph"', 'name = "graph2"'),
            "",
            "sinks.snow.sync.source: the sync writes to Defender with a graph_security source's app; name one of",
        ),
    ],
)
def test_the_sync_source_must_resolve_to_one_graph_security_source(
    tmp_path, capsys, monkeypatch, sources, source, expected
):
    code, _, err = check(capsys, monkeypatch, write(tmp_path, None, sources + SNOW.format(source=source)))
    assert code == 2
    assert expected in err


def test_with_a_sync_sink_serve_needs_no_applying_source_of_its_own(tmp_path, certs, capsys, monkeypatch):
    two = UNREACHABLE_GRAPH + UNREACHABLE_GRAPH.replace('name = "graph"', 'name = "graph2"')
    text = two + SNOW.format(source='source = "graph"')
    code, _, err = check(capsys, monkeypatch, write(tmp_path, tls(certs) + SECRET, text))
    assert code == 0, err


def test_permissions_name_the_write_permission_of_the_applying_source(tmp_path, certs):
    from forwarder.config import load_config
    from forwarder.correlation.permissions import needs
    from forwarder.plugins import PluginHost

    host = PluginHost().load()
    text = write(tmp_path, tls(certs) + 'bearer_token = "literal-token-0123456789"').read_text(encoding="utf-8")
    wanted = [(n.permission, n.source) for n in needs(load_config(text, host)) if "dlpfwd serve" in n.feature]
    assert wanted == [("SecurityIncident.ReadWrite.All", "graph")]
    with_sync = text + SNOW.format(source="")
    assert not [n for n in needs(load_config(with_sync, host)) if "dlpfwd serve" in n.feature]
