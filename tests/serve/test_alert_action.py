"""The Splunk alert action ``dlpfwd_status`` run as Splunk runs it (``--execute``, JSON payload on
stdin, no site-packages) against a real ``dlpfwd serve`` over TLS, reading its secret from a
stand-in of splunkd's credential store; and its .conf/.spec/UI files agree."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from emulators.httpd import App, EmulatorServer, Request, Response
from tests.splunk.test_addon import conf

from .conftest import BEARER, HMAC_KEY, pending, snapshot

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "packaging" / "splunk" / "TA-dlpfwd"
SCRIPT = APP_DIR / "bin" / "dlpfwd_status_action.py"
SESSION_KEY = "session-key-ZYXWVU-0123456789"


class Splunkd(App):
    """``storage/passwords`` of splunkd, for the one app and session key."""

    def __init__(self, secrets: dict[str, str]) -> None:
        super().__init__()
        self.secrets = secrets
        self.reads: list[str] = []
        self.route("GET", r"/servicesNS/nobody/TA-dlpfwd/storage/passwords/(?P<entity>[^/]+)", self.password)

    def password(self, request: Request) -> Response:
        if request.header("Authorization") != f"Splunk {SESSION_KEY}":
            return Response.json({"messages": [{"type": "WARN", "text": "call not properly authenticated"}]}, 401)
        entity = urllib.parse.unquote(request.match.group("entity")) if request.match else ""
        self.reads.append(entity)
        if entity not in self.secrets:
            return Response.json({"messages": [{"type": "ERROR", "text": "Could not find object"}]}, 404)
        realm, name, _ = entity.split(":")
        content = {"realm": realm, "username": name, "clear_password": self.secrets[entity]}
        return Response.json({"entry": [{"name": entity, "content": content}]})


@pytest.fixture
def splunkd(tmp_path: Path) -> Any:
    app = Splunkd({"dlpfwd_serve:hmac_secret:": HMAC_KEY, "dlpfwd_serve:bearer_token:": BEARER})
    with EmulatorServer(app, cert_dir=tmp_path / "splunkd-certs") as server:
        yield server


def payload(server: Any, splunkd: Any, certs: Any, **config: str) -> dict[str, Any]:
    trigger = int(time.time()) - 30
    configuration = {
        "url": server.url,
        "auth": "hmac",
        "secret_file": "",
        "ca_file": str(certs.ca),
        "timeout": "10",
        "incident_field": "incident_id",
        "status": "resolved",
        "classification": "falsePositive",
        "determination": "notMalicious",
        "assigned_to": "",
        "comment": 'Updated by Splunk alert "DLP closed in Splunk"',
    }
    configuration.update(config)
    return {
        "app": "search",
        "owner": "admin",
        "search_name": "DLP closed in Splunk",
        "sid": f"scheduler__admin__search__RMD5d1f0c2b3a4e5f607_at_{trigger}_42",
        "server_host": "sh1",
        "server_uri": splunkd.url,
        "session_key": SESSION_KEY,
        "results_file": "/opt/splunk/var/run/splunk/dispatch/x/results.csv.gz",
        "results_link": "https://sh1:8000/app/search/search?sid=x",
        "configuration": configuration,
        "result": {"incident_id": "2031", "user": "alice@contoso.com", "_time": str(trigger)},
    }


def run_action(data: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    # -I -S: no site-packages, no user site, no PYTHONPATH: the standard library only, as in Splunk
    return subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT), "--execute"],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_alert_action_signs_and_posts_a_status_change(server, splunkd, certs, store):
    data = payload(server, splunkd, certs)
    result = run_action(data)
    assert result.returncode == 0, result.stderr
    assert "accepted (HTTP 202, duplicate False)" in result.stderr
    assert splunkd.app.reads == ["dlpfwd_serve:hmac_secret:"]
    (item,) = pending(store)
    change = item.change
    trigger = int(data["sid"].rsplit("_at_", 1)[1].split("_")[0])
    assert change.reference == f"splunk:{data['sid']}:2031" and change.incident_id == "2031"
    assert (change.status, change.classification, change.determination) == ("resolved", "falsePositive", "notMalicious")
    assert change.assigned_to is None and change.comment == 'Updated by Splunk alert "DLP closed in Splunk"'
    assert change.version == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(trigger))
    assert change.author == "splunk:DLP closed in Splunk"
    for secret in (HMAC_KEY, SESSION_KEY):
        assert secret not in result.stderr and secret not in result.stdout

    # the alert action runs again for the same alert and incident: a repeat, nothing new
    before = snapshot(store)
    again = run_action(data)
    assert again.returncode == 0 and "duplicate True" in again.stderr
    assert snapshot(store) == before


def test_bearer_token_from_a_secret_file_and_tokens_from_the_result(server, splunkd, certs, store, tmp_path):
    secret = tmp_path / "token"
    secret.write_text(BEARER + "\n")
    data = payload(server, splunkd, certs, auth="bearer", secret_file=str(secret), status="inProgress",
                   classification="", determination="", comment="", assigned_to="alice@contoso.com")  # fmt: skip
    data["result"] = {"incident_id": ["incident:2044", "incident:2045"]}  # multivalue, with the dlpfwd prefix
    data["configuration"]["url"] = server.url + "/"
    result = run_action(data)
    assert result.returncode == 0, result.stderr
    assert splunkd.app.reads == []  # the file, not the credential store
    (item,) = pending(store)
    assert item.change.incident_id == "2044" and item.change.status == "inProgress"
    assert item.change.assigned_to == "alice@contoso.com" and item.change.classification is None
    assert BEARER not in result.stderr


@pytest.mark.parametrize(
    ("config", "result", "words"),
    [
        ({"status": "closed"}, None, "HTTP 400 InvalidField: status: expected one of active"),
        ({}, {"other": "x"}, "'incident_id' does not hold a Defender XDR incident id"),
        ({"status": "", "classification": "", "determination": "", "comment": ""}, None, "nothing to change"),
        ({"url": "http://127.0.0.1:1"}, None, "url: expected the https URL"),
        ({"auth": "basic"}, None, "auth: expected hmac or bearer"),
        ({"ca_file": "/nonexistent/ca.pem"}, None, "ca_file: no such file"),
        ({"secret_file": "/nonexistent/secret"}, None, "secret_file: cannot read /nonexistent/secret"),
    ],
)
def test_refusals_exit_2_with_a_reason_and_store_nothing(server, splunkd, certs, store, config, result, words):
    data = payload(server, splunkd, certs, **config)
    if result is not None:
        data["result"] = result
    before = snapshot(store)
    outcome = run_action(data)
    assert outcome.returncode == 2, outcome.stderr
    assert words in outcome.stderr
    assert snapshot(store) == before


def test_a_secret_missing_from_the_credential_store_or_a_wrong_one(server, splunkd, certs, store):
    before = snapshot(store)
    splunkd.app.secrets.pop("dlpfwd_serve:hmac_secret:")
    missing = run_action(payload(server, splunkd, certs))
    assert missing.returncode == 2 and "dlpfwd_serve:hmac_secret not readable: HTTP 404" in missing.stderr
    splunkd.app.secrets["dlpfwd_serve:hmac_secret:"] = "not-the-key-0123456789abcdef"
    wrong = run_action(payload(server, splunkd, certs))
    assert wrong.returncode == 2 and "HTTP 401 Unauthorized: signature does not match" in wrong.stderr
    assert "not-the-key" not in wrong.stderr
    assert snapshot(store) == before


def test_untrusted_endpoint_certificate_is_refused(server, splunkd, certs, store):
    data = payload(server, splunkd, certs, ca_file="")  # system CAs do not know the test CA
    data["configuration"]["timeout"] = "5"
    before = snapshot(store)
    started = time.monotonic()
    outcome = run_action(data)
    assert outcome.returncode == 3 and "CERTIFICATE_VERIFY_FAILED" in outcome.stderr
    assert snapshot(store) == before
    assert time.monotonic() - started < 30


def test_without_execute_or_with_a_bad_payload():
    assert subprocess.run([sys.executable, "-I", "-S", str(SCRIPT)], capture_output=True, text=True).returncode == 2
    bad = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), "--execute"], input="<xml/>", capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode == 2 and "not JSON" in bad.stderr


def test_conf_spec_and_ui_describe_the_same_parameters():
    stanza = conf("default/alert_actions.conf")["dlpfwd_status"]
    assert stanza["is_custom"] == "1" and stanza["payload_format"] == "json"
    assert stanza["python.version"] == "python3"
    assert (APP_DIR / "bin" / stanza["alert.execute.cmd"]).is_file()
    assert stanza["alert.execute.cmd.arg.0"] == "--execute"
    params = {k[len("param.") :] for k in stanza if k.startswith("param.")}
    spec = (APP_DIR / "README" / "alert_actions.conf.spec").read_text(encoding="utf-8")
    assert spec.startswith("[dlpfwd_status]")
    assert set(re.findall(r"^param\.(\w+) =", spec, flags=re.M)) == params
    html = (APP_DIR / "default" / "data" / "ui" / "alerts" / "dlpfwd_status.html").read_text(encoding="utf-8")
    assert set(re.findall(r'name="action\.dlpfwd_status\.param\.(\w+)"', html)) == params
    import xml.etree.ElementTree as ET

    ET.fromstring(html)  # well-formed
    script = SCRIPT.read_text(encoding="utf-8")
    for param in params:
        assert f'"{param}"' in script, param
    meta = conf("metadata/default.meta")
    assert meta["alert_actions/dlpfwd_status"]["export"] == "system"


def test_action_script_parses_as_python_3_9_and_app_conf_has_no_forbidden_trigger():
    import ast

    ast.parse(SCRIPT.read_text(encoding="utf-8"), feature_version=(3, 9))  # Splunk 9.x / 10.0-10.1 Python
    # AppInspect fails a [triggers] reload entry for a Splunk-defined conf such as alert_actions
    assert "reload.alert_actions" not in conf("default/app.conf").get("triggers", {})
