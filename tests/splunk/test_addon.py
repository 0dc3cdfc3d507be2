"""Static checks of the TA-dlpfwd layout and .conf files (what pytest-splunk-addon's static
checks and AppInspect look at, without a Splunk instance)."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import forwarder
from sinks.splunk_hec.envelope import CIM_CONSTANTS, CIM_MAPPING, DEFAULT_SOURCETYPES, FALLBACK_SOURCETYPE

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "packaging" / "splunk" / "TA-dlpfwd"


def conf(name: str) -> dict[str, dict[str, str]]:
    """Parse a Splunk .conf file: stanzas of key = value, '#' comments, '\\' continuations."""
    stanzas: dict[str, dict[str, str]] = {"default": {}}
    current = stanzas["default"]
    text = (APP / name).read_text(encoding="utf-8").replace("\\\n", "")
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{name}:{number}: bad stanza line {line!r}"
            current = stanzas.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{name}:{number}: expected key = value, got {line!r}"
        assert key.strip() not in current, f"{name}:{number}: duplicate key {key.strip()!r}"
        current[key.strip()] = value.strip()
    return stanzas


def test_layout_has_every_required_file():
    for path in [
        "default/app.conf",
        "default/props.conf",
        "default/transforms.conf",
        "default/eventtypes.conf",
        "default/tags.conf",
        "default/inputs.conf",
        "default/data/ui/views/dlpfwd_overview.xml",
        "default/data/ui/nav/default.xml",
        "README/inputs.conf.spec",
        "metadata/default.meta",
        "bin/dlpfwd.py",
        "bin/dlpfwd_modinput.py",
    ]:
        assert (APP / path).is_file(), path


def test_no_vendored_code_is_committed():
    tracked = subprocess.run(
        ["git", "ls-files", str(APP)], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [t for t in tracked if "/bin/lib/" in t or t.endswith(".pyc")]


def test_app_conf_identity_and_version():
    app = conf("default/app.conf")
    assert app["package"]["id"] == APP.name == app["id"]["name"]
    assert app["launcher"]["version"] == app["id"]["version"] == forwarder.__version__
    assert app["ui"]["label"] and app["launcher"]["description"]


def test_every_sourcetype_the_sink_writes_is_configured():
    props = conf("default/props.conf")
    for sourcetype in [*DEFAULT_SOURCETYPES.values(), FALLBACK_SOURCETYPE]:
        stanza = props.get(sourcetype)
        assert stanza is not None, sourcetype
        assert stanza["KV_MODE"] == "json"
        assert stanza["SHOULD_LINEMERGE"] == "false"
        assert stanza["LINE_BREAKER"] == "([\\r\\n]+)"
        assert stanza["TRUNCATE"] == "0"  # DLP events with many detections exceed 10,000 bytes
        assert stanza["TIME_PREFIX"] == '"event_time":"' and stanza["TZ"] == "UTC"


def test_props_references_resolve():
    props, transforms = conf("default/props.conf"), conf("default/transforms.conf")
    for name, stanza in props.items():
        for key, value in stanza.items():
            if key.startswith("REPORT-"):
                for ref in value.split(","):
                    assert ref.strip() in transforms, f"{name}: {key} names unknown transform {ref}"
            if key.startswith("FIELDALIAS-"):
                pairs = re.findall(r'("[^"]+"|\S+)\s+AS\s+(\S+)', value)
                assert pairs and len(pairs) == value.count(" AS "), f"{name}: {key} = {value}"
    for name, stanza in transforms.items():
        if "REGEX" in stanza:
            re.compile(stanza["REGEX"].replace("(?<", "(?P<"))


def test_dlp_events_are_tagged_for_the_cim_dlp_data_model():
    eventtypes, tags = conf("default/eventtypes.conf"), conf("default/tags.conf")
    search = eventtypes["dlpfwd_dlp_incident"]["search"]
    for kind in ("audit", "alert", "incident"):
        assert f'sourcetype="{DEFAULT_SOURCETYPES[kind]}"' in search
    assert DEFAULT_SOURCETYPES["correlation"] not in search
    assert tags["eventtype=dlpfwd_dlp_incident"] == {"dlp": "enabled", "incident": "enabled"}
    for stanza in tags:
        if stanza.startswith("eventtype="):
            assert stanza.split("=", 1)[1] in eventtypes


def test_modular_input_is_declared():
    inputs = conf("default/inputs.conf")
    assert inputs["dlpfwd"]["python.version"] == "python3"
    assert inputs["dlpfwd"]["python.required"] == "3.13"  # AppInspect future failure otherwise
    spec = (APP / "README" / "inputs.conf.spec").read_text()
    assert spec.startswith("[dlpfwd://<name>]")
    assert (APP / "bin" / "dlpfwd.py").exists()  # script name = scheme name


def test_dashboard_is_valid_simple_xml_using_our_eventtypes_and_cim_fields():
    view = ET.parse(APP / "default/data/ui/views/dlpfwd_overview.xml").getroot()
    assert view.tag in ("form", "dashboard") and view.findtext("label")
    eventtypes = conf("default/eventtypes.conf")
    queries = [q.text or "" for q in view.iter("query")]
    assert queries
    cim = set(CIM_MAPPING) | set(CIM_CONSTANTS)
    for query in queries:
        for name in re.findall(r"eventtype=(\w+)", query):
            assert name in eventtypes
        for field in re.findall(r"by ([\w, ]+)", query):
            for f in field.replace(",", " ").split():
                if f not in ("sort", "head"):
                    assert f in cim | {"dlpfwd_key"}, f


def test_metadata_exports_knowledge_objects():
    meta = conf("metadata/default.meta")
    assert meta[""]["export"] == "system"


def test_build_script_packages_the_app(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "packaging/splunk/build.py"), "--out", str(tmp_path), "--skip-vendor"],
        capture_output=True,
        text=True,
        check=True,
    )
    package = Path(result.stdout.strip())
    assert package.name == f"TA-dlpfwd-{forwarder.__version__}.tgz"
    with tarfile.open(package) as tar:
        names = tar.getnames()
    assert all(n.split("/")[0] == "TA-dlpfwd" for n in names)
    assert "TA-dlpfwd/bin/dlpfwd.py" in names and "TA-dlpfwd/default/app.conf" in names
    assert not [n for n in names if "__pycache__" in n]


@pytest.mark.parametrize("name", ["default/props.conf", "default/eventtypes.conf", "default/tags.conf"])
def test_conf_files_parse(name):
    assert conf(name)
