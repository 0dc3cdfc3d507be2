"""The ServiceNow Table API emulator speaks the documented protocol (httpx over TLS)."""

from __future__ import annotations

import ssl

import httpx
import pytest

from emulators.servicenow import query
from emulators.servicenow.app import ServiceNowApp


def client(server, auth=("dlpfwd", "pa55word")) -> httpx.Client:
    tls = ssl.create_default_context(cafile=server.ca_file)
    return httpx.Client(base_url=server.url, verify=tls, auth=auth, headers={"Accept": "application/json"})


def test_create_read_patch_and_numbers(server, app: ServiceNowApp):
    with client(server) as c:
        r = c.post("/api/now/table/incident", json={"short_description": "a", "impact": 1, "urgency": "2"})
        assert r.status_code == 201
        rec = r.json()["result"]
        assert rec["number"] == "INC0010001" and len(rec["sys_id"]) == 32
        assert rec["impact"] == "1" and rec["priority"] == "2"  # priority lookup (1, 2) -> 2
        assert rec["sys_created_by"] == rec["sys_updated_by"] == "dlpfwd"
        assert len(rec["sys_updated_on"]) == 19 and rec["state"] == "1"
        second = c.post("/api/now/table/incident", json={"short_description": "b"}).json()["result"]
        assert second["number"] == "INC0010002"
        sir = c.post("/api/now/table/sn_si_incident", json={"short_description": "s"}).json()["result"]
        assert sir["number"] == "SIR0010001" and sir["state"] == "10"
        p = c.patch(f"/api/now/table/incident/{rec['sys_id']}", json={"work_notes": "hello", "state": "2"})
        assert p.status_code == 200
        body = p.json()["result"]
        assert body["work_notes"] == "" and body["state"] == "2" and body["sys_mod_count"] == "1"
        assert app.journal(rec["sys_id"], "work_notes") == ["hello"]
        one = c.get(f"/api/now/table/incident/{rec['sys_id']}", params={"sysparm_fields": "number,state"})
        assert one.json() == {"result": {"number": "INC0010001", "state": "2"}}
        assert app.writes == 4


def test_query_operators_fields_and_paging(server):
    with client(server) as c:
        for i in range(5):
            c.post(
                "/api/now/table/incident",
                json={"short_description": f"n{i}", "correlation_id": f"dlpfwd:{i}", "urgency": str(1 + i % 3)},
            )

        def q(text, **extra):
            r = c.get("/api/now/table/incident", params={"sysparm_query": text, **extra})
            assert r.status_code == 200
            return r

        assert [x["correlation_id"] for x in q("correlation_id=dlpfwd:3").json()["result"]] == ["dlpfwd:3"]
        assert len(q("correlation_id!=dlpfwd:3").json()["result"]) == 4
        assert len(q("correlation_idINdlpfwd:1,dlpfwd:2,nope").json()["result"]) == 2
        assert len(q("correlation_idSTARTSWITHdlpfwd:").json()["result"]) == 5
        assert len(q("urgency>=2^urgency<=2").json()["result"]) == 2
        assert len(q("urgency=1^ORurgency=3").json()["result"]) == 3
        desc = q("ORDERBYDESCshort_description", sysparm_fields="short_description").json()["result"]
        assert [x["short_description"] for x in desc] == ["n4", "n3", "n2", "n1", "n0"]
        assert set(desc[0]) == {"short_description"}
        page = q("ORDERBYshort_description", sysparm_limit="2", sysparm_offset="2")
        assert [x["short_description"] for x in page.json()["result"]] == ["n2", "n3"]
        assert page.headers["X-Total-Count"] == "5"
        assert 'rel="next"' in page.headers["Link"] and 'rel="prev"' in page.headers["Link"]
        stamp = page.json()["result"][0]
        newer = q("sys_updated_on>=2000-01-01 00:00:00").json()["result"]
        assert len(newer) == 5 and stamp
        assert q("sys_updated_on>2999-01-01 00:00:00").json() == {"result": []}
        # unknown query parts are silently ignored, as on a real instance
        assert len(q("bogus part here").json()["result"]) == 5
        v1 = c.get("/api/now/v1/table/incident", params={"sysparm_query": "correlation_id=none"})
        assert v1.status_code == 404 and v1.json()["error"]["message"] == "No Record found"


def test_display_values(server):
    with client(server) as c:
        c.post("/api/now/table/incident", json={"state": "6"})
        shown = c.get("/api/now/table/incident", params={"sysparm_display_value": "true"}).json()["result"][0]
        assert shown["state"] == "Resolved"
        both = c.get("/api/now/table/incident", params={"sysparm_display_value": "all"}).json()["result"][0]
        assert both["state"] == {"display_value": "Resolved", "value": "6"}


def test_errors_use_the_servicenow_envelope(server, app: ServiceNowApp):
    with client(server, auth=("dlpfwd", "wrong")) as c:
        r = c.get("/api/now/table/incident")
        assert r.status_code == 401
        assert r.json() == {
            "error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"},
            "status": "failure",
        }
    app.tables = {"incident"}
    with client(server) as c:
        r = c.get("/api/now/table/nope")
        assert r.status_code == 400 and r.json()["error"]["message"] == "Invalid table nope"
        missing = c.get("/api/now/table/incident/0123456789abcdef0123456789abcdef")
        assert missing.status_code == 404 and missing.json()["status"] == "failure"
        bad = c.post("/api/now/table/incident", content=b"{not json", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400
        app.throttle(2, retry_after=7)
        for _ in range(2):
            t = c.get("/api/now/table/incident")
            assert t.status_code == 429 and t.headers["Retry-After"] == "7"
            assert t.json()["error"]["message"] == "Rate limit exceeded"
        app.fail(1, 502)
        assert c.get("/api/now/table/incident").status_code == 502
        assert c.get("/api/now/table/incident").status_code == 200
        app.read_only.add("dlpfwd")
        forbidden = c.post("/api/now/table/incident", json={})
        assert forbidden.status_code == 403
        assert app.writes == 0


def test_fail_after_write_commits_then_answers_500(server, app: ServiceNowApp):
    app.fail_after_write(1)
    with client(server) as c:
        r = c.post("/api/now/table/incident", json={"correlation_id": "x"})
        assert r.status_code == 500
    assert [rec["correlation_id"] for rec in app.table("incident")] == ["x"]


def test_hibernating_instance_answers_html(server, app: ServiceNowApp):
    app.hibernating = True
    with client(server) as c:
        r = c.get("/api/now/table/incident")
        assert r.status_code == 200 and "Instance Hibernating page" in r.text


def test_oauth_client_credentials(server, app: ServiceNowApp):
    with httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=server.ca_file)) as c:
        bad = c.post(
            "/oauth_token.do",
            data={"grant_type": "client_credentials", "client_id": "dlpfwd-client", "client_secret": "nope"},
        )
        assert bad.status_code == 401
        tok = c.post(
            "/oauth_token.do",
            data={"grant_type": "client_credentials", "client_id": "dlpfwd-client", "client_secret": "cl1ent-secret"},
        )
        assert tok.status_code == 200
        body = tok.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 1799
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        created = c.post("/api/now/table/incident", json={"short_description": "x"}, headers=headers)
        assert created.status_code == 201 and created.json()["result"]["sys_created_by"] == "dlpfwd.oauth"
        app.expire_tokens()
        assert c.get("/api/now/table/incident", headers=headers).status_code == 401


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        ("a=1^b=2", {"a": "1", "b": "2"}, True),
        ("a=1^b=2", {"a": "1", "b": "3"}, False),
        ("a=1^ORa=2^b=x", {"a": "2", "b": "x"}, True),
        ("a=9^NQb=x", {"a": "1", "b": "x"}, True),
        ("aISEMPTY", {"a": ""}, True),
        ("aISNOTEMPTY", {}, False),
        ("aLIKEell", {"a": "hello"}, True),
        ("aNOT INx,y", {"a": "z"}, True),
        ("n>9", {"n": "10"}, True),  # numbers compare as numbers
    ],
)
def test_encoded_query(text, record, expected):
    assert query.parse(text).matches(record) is expected


def test_the_servicenow_emulator_command_serves_the_table_api(tmp_path):
    import os
    import re
    import subprocess
    import sys

    code = "import sys; from forwarder.cli import main; sys.exit(main())"
    env = {**os.environ, "SN_EMULATOR_PASSWORD": "pw"}
    # --host as in the other emulators' commands
    cmd = [sys.executable, "-c", code, "servicenow-emulator", "--host", "127.0.0.1", "--state-dir", "tls"]
    cmd += ["--user", "u"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        m = re.search(r"listening on (\S+) \(CA: (\S+)\)", line)
        assert m, line + proc.stderr.read() if proc.poll() is not None else line
        assert m.group(2) == str(tmp_path / "tls" / "ca.pem")  # absolute: usable from any directory
        tls = ssl.create_default_context(cafile=m.group(2))
        with httpx.Client(base_url=m.group(1), verify=tls, auth=("u", "pw")) as c:
            assert c.post("/api/now/table/incident", json={"short_description": "x"}).status_code == 201
            assert c.get("/api/now/table/incident").json()["result"][0]["number"] == "INC0010001"
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_unknown_columns_are_ignored_in_queries_and_writes(server, app):
    app.columns["u_case"] = {"short_description"}
    with client(server) as c:
        c.post("/api/now/table/u_case", json={"short_description": "a", "nosuch": "x"})
        c.post("/api/now/table/u_case", json={"short_description": "b"})
        rows = c.get("/api/now/table/u_case", params={"sysparm_query": "nosuch=x^ORDERBYnosuch"}).json()["result"]
        assert len(rows) == 2 and "nosuch" not in rows[0]
        one = c.get("/api/now/table/u_case", params={"sysparm_query": "short_description=b^nosuch=zzz"}).json()
        assert [r["short_description"] for r in one["result"]] == ["b"]


def test_closing_an_incident_makes_it_inactive(server, app):
    with client(server) as c:
        rec = c.post("/api/now/table/incident", json={}).json()["result"]
        assert rec["active"] == "true"
        closed = c.patch(f"/api/now/table/incident/{rec['sys_id']}", json={"state": "7"}).json()["result"]
        assert closed["active"] == "false"
        app.lock_inactive = True
        assert c.patch(f"/api/now/table/incident/{rec['sys_id']}", json={"state": "2"}).status_code == 403


def test_command_flags_match_the_other_emulators():
    """--host/--port/--http/--state-dir as every emulator command spells them; the older
    --listen, --no-tls (and --cert-dir) still parse."""
    import argparse

    from emulators.servicenow.plugin import configure

    parser = argparse.ArgumentParser()
    configure(parser)
    for argv in (
        ["--host", "127.0.0.2", "--port", "0", "--http", "--state-dir", "d"],
        ["--listen", "127.0.0.2", "--port", "0", "--no-tls", "--cert-dir", "d"],
    ):
        args = parser.parse_args(argv)
        assert (args.bind, args.port, args.http, args.state_dir) == ("127.0.0.2", 0, True, "d")
    defaults = parser.parse_args([])
    assert (defaults.bind, defaults.port, defaults.http, defaults.state_dir) == (
        "127.0.0.1",
        0,
        False,
        "./servicenow-emulator",
    )
