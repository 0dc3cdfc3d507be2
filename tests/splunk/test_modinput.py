"""The TA-dlpfwd modular input: scheme, validation and the events it streams (Splunk's XML)."""

from __future__ import annotations

import io
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

import orjson
import pytest
from splunklib.modularinput import EventWriter

from forwarder.schema import to_dict
from tests.splunk.conftest import make_event

BIN = Path(__file__).resolve().parents[2] / "packaging" / "splunk" / "TA-dlpfwd" / "bin"
sys.path.insert(0, str(BIN))
import dlpfwd_modinput  # noqa: E402


def run(args: list[str], stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = dlpfwd_modinput.DlpfwdInput().run_script(["dlpfwd.py", *args], EventWriter(out, err), io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def config(tmp_path) -> Path:
    records = tmp_path / "records.jsonl"
    lines = []
    for i, kind in enumerate(["audit", "alert", "incident"]):
        data = to_dict(make_event(i, kind=kind, title=f"{kind} {i}" if kind != "audit" else ""))
        lines.append(orjson.dumps({"kind": "sample", "data": data}).decode())
    records.write_text("\n".join(lines) + "\n")
    path = tmp_path / "dlpfwd.toml"
    path.write_text(
        f"""
[forwarder]
state_dir = "{tmp_path / "ignored-state"}"

[[sources]]
name = "lab"
type = "sample"
path = "{records}"
"""
    )
    return path


def params_xml(params: dict[str, str]) -> str:
    return "".join(f'<param name="{k}">{escape(v)}</param>' for k, v in params.items())


def input_xml(checkpoint: Path, stanza: str, params: dict[str, str]) -> str:
    return (
        "<input><server_host>hf01</server_host><server_uri>https://127.0.0.1:8089</server_uri>"
        f"<session_key>k</session_key><checkpoint_dir>{checkpoint}</checkpoint_dir>"
        f'<configuration><stanza name="{stanza}">{params_xml(params)}</stanza></configuration></input>'
    )


def validation_xml(checkpoint: Path, params: dict[str, str]) -> str:
    return (
        "<items><server_host>hf01</server_host><server_uri>https://127.0.0.1:8089</server_uri>"
        f"<session_key>k</session_key><checkpoint_dir>{checkpoint}</checkpoint_dir>"
        f'<item name="lab">{params_xml(params)}</item></items>'
    )


def test_scheme_declares_the_arguments_and_xml_streaming():
    code, out, _ = run(["--scheme"])
    assert code == 0
    scheme = ET.fromstring(out)
    assert scheme.findtext("title") == "dlpfwd: Microsoft Purview DLP"
    assert scheme.findtext("use_external_validation") == "true"
    assert scheme.findtext("use_single_instance") == "false"
    assert scheme.findtext("streaming_mode") == "xml"
    args = {a.get("name"): a for a in scheme.iter("arg")}
    assert set(args) == {"config", "sources", "sourcetype_audit", "sourcetype_alert", "sourcetype_incident"}
    assert args["config"].findtext("required_on_create") == "true"
    assert args["sources"].findtext("required_on_create") == "false"


def test_scheme_arguments_match_the_inputs_spec():
    spec = (BIN.parent / "README" / "inputs.conf.spec").read_text()
    _, out, _ = run(["--scheme"])
    for arg in ET.fromstring(out).iter("arg"):
        assert f"\n{arg.get('name')} = <string>" in spec


def test_validation_accepts_a_good_configuration(config, tmp_path):
    code, out, _ = run(["--validate-arguments"], validation_xml(tmp_path, {"config": str(config)}))
    assert code == 0 and out == ""


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"config": "/nonexistent/dlpfwd.toml"}, "configuration file not found"),
        ({"sources": "lab"}, "config: the path of a dlpfwd configuration file is required"),
        ({"config": "{config}", "sources": "lab, nope"}, "sources: nope not in"),
    ],
)
def test_validation_rejects_with_a_clear_message(config, tmp_path, params, message):
    params = {k: v.format(config=config) for k, v in params.items()}
    code, out, _ = run(["--validate-arguments"], validation_xml(tmp_path, params))
    assert code == 1
    assert message in ET.fromstring(out).findtext("message")


def test_streams_events_as_modular_input_xml_and_resumes(config, tmp_path):
    checkpoint = tmp_path / "checkpoints"
    checkpoint.mkdir()
    definition = input_xml(checkpoint, "dlpfwd://lab", {"config": str(config), "sourcetype_alert": "custom:alert"})
    code, out, err = run([], definition)
    assert code == 0, err
    stream = ET.fromstring(out)
    assert stream.tag == "stream"
    events = stream.findall("event")
    assert len(events) == 3
    by_type = {e.findtext("sourcetype"): e for e in events}
    assert set(by_type) == {"dlpfwd:purview:audit", "custom:alert", "dlpfwd:purview:incident"}
    audit = by_type["dlpfwd:purview:audit"]
    assert audit.get("stanza") == "dlpfwd://lab" and audit.get("unbroken") == "1"
    assert audit.find("done") is not None
    assert audit.findtext("time") == "1795428000.250"
    assert audit.findtext("source") == "dlpfwd:lab"
    assert audit.find("index") is None  # the input's own index setting applies
    data = orjson.loads(audit.findtext("data"))
    assert data["dlp_type"] == "email" and data["action"] == "blocked" and data["src_user"] == "alice@contoso.com"
    assert data["dlpfwd"]["idempotency_key"] == "rec-0@2026-11-23T10:00:00Z"
    assert (checkpoint / "lab").is_dir()  # state under Splunk's checkpoint dir, not the file's state_dir
    assert not (tmp_path / "ignored-state").exists()
    assert "source lab: read 3" in err
    # the next run resumes from the cursor: nothing again
    code, out, err = run([], definition)
    assert code == 0, err
    assert "<event" not in out
