"""forwarder.auth against the tenant emulator's token endpoint (msal over TLS): client secret,
PEM certificate (thumbprint derived), PFX with password, reuse and renewal ahead of expiry."""

from __future__ import annotations

import hashlib
import logging

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from emulators.tenant import EmulatorConfig, FaultConfig, TenantEmulator
from emulators.tenant.identity import make_certificate
from forwarder.auth import AuthSettings, TokenProvider, certificate_thumbprint
from forwarder.errors import FatalError, RetriableError
from forwarder.settings import HttpSettings, Secret
from sources._common import token_roles
from tests.sources.emulated import serve

GRAPH = "https://graph.microsoft.com/.default"
MANAGE = "https://manage.office.com/.default"


@pytest.fixture(scope="module")
def tenant(tmp_path_factory):
    emu = TenantEmulator(
        EmulatorConfig(seed=21, audit_records=10, faults=FaultConfig(token_lifetime=600)),
        state_dir=tmp_path_factory.mktemp("emu"),
    )
    with serve(emu) as server:
        yield emu, server


def settings(emu, server, **kw) -> AuthSettings:
    base = {"tenant_id": emu.tenant_id, "client_id": emu.client_id, "authority": server.url}
    return AuthSettings(**{**base, **kw})


def test_client_secret_token_reused_then_renewed_ahead_of_expiry(tenant, caplog):
    emu, server = tenant
    caplog.set_level(logging.DEBUG)
    http = HttpSettings(ca_bundle=server.ca_file)
    tp = TokenProvider(settings(emu, server, client_secret=Secret(emu.client_secret)), http)
    token = tp.token(GRAPH)
    assert "SecurityAlert.ReadWrite.All" in token_roles(token)
    assert tp.token(GRAPH) == token and tp.acquired == 1  # reused
    assert "ActivityFeed.Read" in token_roles(tp.token(MANAGE)) and tp.acquired == 2  # one per resource
    # A margin longer than the lifetime: every call renews (msal's own cache is bypassed).
    eager = TokenProvider(settings(emu, server, client_secret=Secret(emu.client_secret), refresh_margin=601), http)
    eager.token(GRAPH)
    eager.token(GRAPH)
    assert eager.acquired == 2
    tp.invalidate(GRAPH)
    tp.token(GRAPH)
    assert tp.acquired == 3
    assert emu.client_secret not in caplog.text
    assert token not in caplog.text


def test_certificate_pem_with_encrypted_key_and_derived_thumbprint(tenant, tmp_path):
    emu, server = tenant
    cert_pem, key_pem = make_certificate("dlpfwd-pem")
    client_id = emu.register_certificate_app(cert_pem)
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    (tmp_path / "cert.pem").write_text(cert_pem)
    (tmp_path / "key.pem").write_bytes(encrypted)
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    assert certificate_thumbprint(cert_pem.encode()) == hashlib.sha1(der).hexdigest().upper()
    s = settings(
        emu,
        server,
        client_id=client_id,
        certificate=str(tmp_path / "cert.pem"),
        private_key=str(tmp_path / "key.pem"),
        certificate_password=Secret("s3cret"),
    )
    token = TokenProvider(s, HttpSettings(ca_bundle=server.ca_file)).token(GRAPH)
    assert token_roles(token)


def test_certificate_and_key_in_one_pem_file(tenant, tmp_path):
    emu, server = tenant
    cert_pem, key_pem = make_certificate("dlpfwd-combined")
    client_id = emu.register_certificate_app(cert_pem)
    (tmp_path / "both.pem").write_text(key_pem + cert_pem)
    s = settings(emu, server, client_id=client_id, certificate=str(tmp_path / "both.pem"))
    assert TokenProvider(s, HttpSettings(ca_bundle=server.ca_file)).token(MANAGE)


def test_pfx_with_password(tenant, tmp_path):
    emu, server = tenant
    cert_pem, key_pem = make_certificate("dlpfwd-pfx")
    client_id = emu.register_certificate_app(cert_pem)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    blob = pkcs12.serialize_key_and_certificates(
        b"app",
        key,
        cert,
        None,
        serialization.BestAvailableEncryption(b"pfx-pass"),  # type: ignore[arg-type]
    )
    (tmp_path / "app.pfx").write_bytes(blob)
    s = settings(
        emu, server, client_id=client_id, pfx=str(tmp_path / "app.pfx"), certificate_password=Secret("pfx-pass")
    )
    assert token_roles(TokenProvider(s, HttpSettings(ca_bundle=server.ca_file)).token(GRAPH))


def test_wrong_secret_is_fatal_and_never_echoed(tenant):
    emu, server = tenant
    tp = TokenProvider(
        settings(emu, server, client_secret=Secret("wrong-secret-value")), HttpSettings(ca_bundle=server.ca_file)
    )
    with pytest.raises(FatalError) as info:
        tp.token(GRAPH)
    assert "invalid_client" in str(info.value) and "wrong-secret-value" not in str(info.value)


def test_no_credential_is_a_clear_error(tenant):
    emu, server = tenant
    with pytest.raises(FatalError, match="client_secret, certificate"):
        TokenProvider(settings(emu, server), HttpSettings(ca_bundle=server.ca_file))


def test_proxy_and_ca_bundle_reach_msal(tenant):
    emu, server = tenant
    http = HttpSettings(ca_bundle=server.ca_file, proxy="http://proxy.invalid:3128")
    tp = TokenProvider(settings(emu, server, client_secret=Secret(emu.client_secret)), http)
    assert tp.session.proxies == {"http": "http://proxy.invalid:3128", "https": "http://proxy.invalid:3128"}
    assert tp.session.verify == server.ca_file
    with pytest.raises(RetriableError, match="ProxyError"):  # msal really went through the proxy
        tp.token(GRAPH)


def test_unreadable_credential_files_are_fatal(tenant, tmp_path):
    emu, server = tenant
    with pytest.raises(FatalError, match="cannot read"):
        TokenProvider(settings(emu, server, certificate=str(tmp_path / "missing.pem")))
    with pytest.raises(FatalError, match="not found"):
        TokenProvider(settings(emu, server, pfx=str(tmp_path / "missing.pfx")))


def test_tls_failure_names_the_root_cause_readably(tenant):
    """A client without the emulator's CA: the error gives the innermost cause (the certificate
    verification failure) whole, on one line, bounded, not cut mid-word."""
    emu, server = tenant
    tp = TokenProvider(settings(emu, server, client_secret=Secret(emu.client_secret)), HttpSettings())
    with pytest.raises(RetriableError) as info:
        tp.token(GRAPH)
    message = str(info.value)
    assert "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed" in message
    assert "\n" not in message and len(message) < 400
    assert "Caused by" not in message  # not the wrapped repr chain of requests/urllib3
    assert emu.client_secret not in message


def test_root_cause_is_bounded_at_a_word_boundary_and_redacted():
    from forwarder.auth import root_cause

    try:
        try:
            raise ValueError("word " * 200 + "client_secret=hunter2hunter2")
        except ValueError as inner:
            raise RuntimeError("wrapper") from inner
    except RuntimeError as exc:
        text = root_cause(exc)
    assert text.startswith("RuntimeError caused by ValueError: word word")
    assert len(text) <= 300 and text.endswith("word…")
    try:
        raise OSError("token request failed client_secret=hunter2hunter2")
    except OSError as exc:
        assert "hunter2" not in root_cause(exc)
