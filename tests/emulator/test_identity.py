"""Entra ID emulation: msal (unmodified) over TLS, with a secret and with a certificate; AADSTS errors."""

from __future__ import annotations

import jwt
import msal
import pytest
import requests

from emulators.tenant.identity import make_certificate
from emulators.tenant.tokens import GRAPH, MANAGEMENT, MONITOR, TokenError, TokenVerifier
from forwarder.auth import certificate_thumbprint


def _aad(r, status, error, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}:")
    assert "Trace ID:" in body["error_description"] and body["correlation_id"]


def test_msal_client_secret_gets_a_verifiable_token_per_audience(shared):
    app = shared.msal_app()
    verifier = TokenVerifier(shared.http.get(f"/{shared.emu.tenant_id}/discovery/v2.0/keys").json())
    for resource, roles in ((GRAPH, "SecurityAlert.ReadWrite.All"), (MANAGEMENT, "ActivityFeed.ReadDlp")):
        result = app.acquire_token_for_client(scopes=[f"{resource}/.default"])
        assert "access_token" in result, result
        assert result["token_type"] == "Bearer" and result["expires_in"] > 3000
        claims = verifier.verify(result["access_token"], resource)
        assert claims["tid"] == shared.emu.tenant_id
        assert claims["appid"] == shared.emu.client_id
        assert claims["appidacr"] == "1"
        assert roles in claims["roles"]
        with pytest.raises(TokenError) as err:
            verifier.verify(result["access_token"], MONITOR)
        assert err.value.reason == "audience"


def test_discovery_documents(shared):
    tid = shared.emu.tenant_id
    doc = shared.http.get(f"/{tid}/v2.0/.well-known/openid-configuration").json()
    assert doc["token_endpoint"] == f"{shared.url}/{tid}/oauth2/v2.0/token"
    assert doc["jwks_uri"] == f"{shared.url}/{tid}/discovery/v2.0/keys"
    # the tenant's domain name works as authority too, and discovery names the GUID
    by_domain = shared.http.get(f"/{shared.emu.config.tenant_domain}/v2.0/.well-known/openid-configuration").json()
    assert by_domain["token_endpoint"] == doc["token_endpoint"]
    inst = shared.http.get(
        "/common/discovery/instance",
        params={"api-version": "1.1", "authorization_endpoint": f"{shared.url}/{tid}/oauth2/v2.0/authorize"},
    ).json()
    assert inst["tenant_discovery_endpoint"].endswith(f"/{tid}/v2.0/.well-known/openid-configuration")


def test_msal_with_instance_discovery_endpoint_of_the_emulator(shared):
    session = requests.Session()
    session.verify = shared.server.ca_file
    session.trust_env = False
    app = msal.ConfidentialClientApplication(
        shared.emu.client_id,
        client_credential=shared.emu.client_secret,
        authority=f"{shared.url}/{shared.emu.tenant_id}",
        http_client=session,
        instance_discovery=f"{shared.url}/common/discovery/instance",
    )
    assert "access_token" in app.acquire_token_for_client(scopes=[f"{GRAPH}/.default"])


@pytest.mark.parametrize("with_public_cert", [False, True])
def test_msal_certificate_assertion(tenant, with_public_cert):
    cert_pem, key_pem = make_certificate()
    client_id = tenant.emu.register_certificate_app(cert_pem)
    credential = {"private_key": key_pem, "thumbprint": certificate_thumbprint(cert_pem.encode())}
    if with_public_cert:  # msal then signs PS256 with x5t#S256 and sends x5c
        credential = {"private_key": key_pem, "public_certificate": cert_pem}
    result = tenant.msal_app(credential, client_id).acquire_token_for_client(scopes=[f"{MANAGEMENT}/.default"])
    assert "access_token" in result, result
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["appid"] == client_id and claims["appidacr"] == "2"


@pytest.mark.parametrize("thumbprint_of", ["own", "registered"])
def test_assertion_not_signed_by_the_registered_key_is_aadsts700027(tenant, thumbprint_of):
    """An assertion signed with another key is refused, under the thumbprint of that key's own
    certificate (not registered) or of the registered one (a forged signature)."""
    registered, _ = make_certificate("registered")
    other_cert, other_key = make_certificate("other")
    client_id = tenant.emu.register_certificate_app(registered)
    presented = registered if thumbprint_of == "registered" else other_cert
    credential = {"private_key": other_key, "thumbprint": certificate_thumbprint(presented.encode())}
    result = tenant.msal_app(credential, client_id).acquire_token_for_client(scopes=[f"{GRAPH}/.default"])
    assert result["error"] == "invalid_client" and 700027 in result["error_codes"]


def test_wrong_secret_unknown_client_and_unknown_resource(shared):
    bad = shared.msal_app("not-the-secret").acquire_token_for_client(scopes=[f"{GRAPH}/.default"])
    assert bad["error"] == "invalid_client" and bad["error_codes"] == [7000215]
    unknown = shared.msal_app(client_id="11111111-2222-3333-4444-555555555555").acquire_token_for_client(
        scopes=[f"{GRAPH}/.default"]
    )
    assert unknown["error"] == "unauthorized_client" and unknown["error_codes"] == [700016]
    resource = shared.msal_app().acquire_token_for_client(scopes=["https://example.invalid/.default"])
    assert resource["error"] == "invalid_resource" and resource["error_codes"] == [500011]


def test_token_endpoint_error_shapes(shared):
    tid = shared.emu.tenant_id
    base = {"grant_type": "client_credentials", "client_id": shared.emu.client_id, "scope": f"{GRAPH}/.default"}
    _aad(
        shared.http.post(f"/{tid}/oauth2/v2.0/token", data={**base, "client_secret": "x"}),
        401,
        "invalid_client",
        7000215,
    )
    _aad(shared.http.post(f"/{tid}/oauth2/v2.0/token", data=base), 401, "invalid_client", 7000218)
    no_scope = {k: v for k, v in base.items() if k != "scope"} | {"client_secret": shared.emu.client_secret}
    _aad(shared.http.post(f"/{tid}/oauth2/v2.0/token", data=no_scope), 400, "invalid_request", 900144)
    bad_scope = {**base, "client_secret": shared.emu.client_secret, "scope": "SecurityAlert.Read.All"}
    _aad(shared.http.post(f"/{tid}/oauth2/v2.0/token", data=bad_scope), 400, "invalid_scope", 1002012)
    other_tenant = "00000000-1111-2222-3333-444444444444"
    r = shared.http.post(f"/{other_tenant}/oauth2/v2.0/token", data={**base, "client_secret": shared.emu.client_secret})
    _aad(r, 400, "invalid_tenant", 90002)
    r = shared.http.get(f"/{other_tenant}/v2.0/.well-known/openid-configuration")
    _aad(r, 400, "invalid_tenant", 90002)
    grant = {**base, "client_secret": shared.emu.client_secret, "grant_type": "password"}
    _aad(shared.http.post(f"/{tid}/oauth2/v2.0/token", data=grant), 400, "unsupported_grant_type", 70003)


def test_http_basic_client_authentication(shared):
    r = shared.http.post(
        f"/{shared.emu.tenant_id}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "scope": f"{GRAPH}/.default"},
        auth=(shared.emu.client_id, shared.emu.client_secret),
    )
    assert r.status_code == 200 and r.json()["access_token"]


def test_msal_unknown_tenant_fails_discovery(shared):
    session = requests.Session()
    session.verify = shared.server.ca_file
    session.trust_env = False
    with pytest.raises(ValueError, match="90002|Unable to get authority"):
        msal.ConfidentialClientApplication(
            shared.emu.client_id,
            client_credential=shared.emu.client_secret,
            authority=f"{shared.url}/contoso-unknown.onmicrosoft.com",
            http_client=session,
            instance_discovery=False,
        )


def test_token_lifetime_knob_and_expiry_with_emulated_clock(tenant):
    tenant.emu.faults.update(token_lifetime=120)
    token = tenant.token(GRAPH)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120
    assert tenant.graph("alerts_v2?$top=1", token).status_code == 200
    tenant.emu.clock.advance(seconds=121)
    r = tenant.graph("alerts_v2?$top=1", token)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "expired" in r.json()["error"]["message"]


def test_msal_pfx_certificate(tenant, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    cert_pem, key_pem = make_certificate("pfx-app")
    pfx = pkcs12.serialize_key_and_certificates(
        b"dlpfwd",
        serialization.load_pem_private_key(key_pem.encode(), None),  # type: ignore[arg-type]
        x509.load_pem_x509_certificate(cert_pem.encode()),
        None,
        serialization.BestAvailableEncryption(b"pfx-pass"),
    )
    path = tmp_path / "app.pfx"
    path.write_bytes(pfx)
    client_id = tenant.emu.register_certificate_app(cert_pem)
    credential = {"private_key_pfx_path": str(path), "passphrase": "pfx-pass"}
    result = tenant.msal_app(credential, client_id).acquire_token_for_client(scopes=[f"{GRAPH}/.default"])
    assert "access_token" in result, result
