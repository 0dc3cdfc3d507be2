"""Remaining documented error paths and the plain-HTTP option."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emulators.tenant import EmulatorConfig, TenantEmulator
from emulators.tenant.identity import CLIENT_ASSERTION_TYPE, make_certificate
from emulators.tenant.tokens import GRAPH, MANAGEMENT


def _assertion(cert_pem: str, key_pem: str, client_id: str, aud: str, exp_offset: int = 600) -> str:
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    x5t = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    now = int(time.time())
    claims = {"aud": aud, "iss": client_id, "sub": client_id, "exp": now + exp_offset, "iat": now - 10}
    claims["jti"] = str(uuid.uuid4())
    return jwt.encode(claims, key, algorithm="RS256", headers={"x5t": x5t})


def test_client_assertion_errors(tenant):
    cert, key = make_certificate()
    cid = tenant.emu.register_certificate_app(cert)
    tid = tenant.emu.tenant_id
    endpoint = f"{tenant.url}/{tid}/oauth2/v2.0/token"

    def post(assertion: str, kind: str = CLIENT_ASSERTION_TYPE) -> httpx.Response:
        return tenant.http.post(
            f"/{tid}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": cid,
                "scope": f"{GRAPH}/.default",
                "client_assertion_type": kind,
                "client_assertion": assertion,
            },
        )

    assert post(_assertion(cert, key, cid, endpoint)).status_code == 200
    expired = post(_assertion(cert, key, cid, endpoint, exp_offset=-3600))
    assert expired.status_code == 401 and expired.json()["error_codes"] == [700024]
    wrong_aud = post(_assertion(cert, key, cid, "https://login.microsoftonline.com/x/oauth2/v2.0/token"))
    assert wrong_aud.status_code == 401 and wrong_aud.json()["error_codes"] == [700021]
    other_iss = post(_assertion(cert, key, str(uuid.uuid4()), endpoint))
    assert other_iss.json()["error_codes"] == [700021]
    assert post(_assertion(cert, key, cid, endpoint), kind="bearer").json()["error_codes"] == [50027]
    assert post("not-a-jwt").json()["error_codes"] == [50027]


def test_v1_discovery_and_jwks_for_unknown_tenant(shared):
    doc = shared.http.get(f"/{shared.emu.tenant_id}/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"https://sts.windows.net/{shared.emu.tenant_id}/"
    r = shared.http.get("/someone-else.onmicrosoft.com/discovery/v2.0/keys")
    assert r.status_code == 400 and r.json()["error_codes"] == [90002]


def test_notifications_and_accept_language(shared):
    token = shared.token(MANAGEMENT)
    shared.mgmt("POST", "subscriptions/start", token, params={"contentType": "Audit.General"})
    r = shared.mgmt("GET", "subscriptions/notifications", token, params={"contentType": "Audit.General"})
    assert r.status_code == 200 and r.json() == []
    r = shared.mgmt("GET", "subscriptions/notifications", token, params={"contentType": "Audit.AzureActiveDirectory"})
    assert r.json()["error"]["code"] == "AF20022"
    r = shared.mgmt("GET", "resources/dlpSensitiveTypes", token, headers={"Accept-Language": "en-US, fr-FR"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "AF20053"


def test_unknown_paths_answer_in_each_service_shape(shared):
    token = shared.token(MANAGEMENT)
    r = shared.mgmt("GET", "subscriptions/nope", token)
    assert r.status_code == 404 and r.json()["error"]["code"].startswith("AF")
    r = shared.graph("/v1.0/security/nothing", shared.token(GRAPH))
    assert r.status_code == 404 and r.json()["error"]["code"] == "BadRequest"


def test_plain_http_option(tmp_path):
    emu = TenantEmulator(EmulatorConfig(seed=2, audit_records=50), state_dir=tmp_path)
    with emu.serve(tls=False) as server:
        assert server.url.startswith("http://") and not server.ca_file
        r = httpx.post(
            f"{server.url}/{emu.tenant_id}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": emu.client_id,
                "client_secret": emu.client_secret,
                "scope": f"{GRAPH}/.default",
            },
        )
        token = r.json()["access_token"]
        alerts = httpx.get(f"{server.url}/v1.0/security/alerts_v2", headers={"Authorization": f"Bearer {token}"})
        assert alerts.status_code == 200 and len(alerts.json()["value"]) == len(emu.expected_alert_ids())


def test_fault_knobs_refuse_unknown_names(shared):
    import pytest

    with pytest.raises(TypeError, match="unknown fault knob"):
        shared.emu.faults.update(throttle=1.0)


def test_control_plane(tenant):
    r = tenant.http.post("/_emulator/faults", json={"throttle_rate": 1.0})
    assert r.status_code == 200 and r.json()["throttle_rate"] == 1.0
    assert tenant.graph("alerts_v2", tenant.token(GRAPH)).status_code == 429
    assert tenant.http.post("/_emulator/faults", json={"nope": 1}).status_code == 400
    tenant.http.post("/_emulator/faults", json={"throttle_rate": 0.0})
    before = tenant.emu.clock.time()
    r = tenant.http.post("/_emulator/clock", json={"advance_seconds": 3600})
    assert r.status_code == 200 and tenant.emu.clock.time() - before >= 3600
    assert tenant.http.post("/_emulator/clock", json={"advance_seconds": -1}).status_code == 400
    expected = tenant.http.get("/_emulator/expected", params={"content_type": "DLP.All"}).json()
    assert expected["audit_records"] == len(tenant.emu.expected_audit_ids())
    stats = tenant.http.get("/_emulator/stats").json()
    assert stats["injected"]["graph_429"] == 1
