"""Entra ID (v2.0) endpoints for client-credentials apps, as msal uses them.

Routes (``{tenant}`` = the tenant GUID or its domain name):

* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (and the v1 form without ``/v2.0``)
* ``GET /{tenant}/discovery/v2.0/keys`` (JWKS; also ``/common/discovery/keys``)
* ``GET /common/discovery/instance`` (instance discovery, for msal without ``instance_discovery=False``)
* ``POST /{tenant}/oauth2/v2.0/token`` -- ``grant_type=client_credentials`` with ``client_secret``
  (body or HTTP Basic) or a ``private_key_jwt`` client assertion signed with a registered
  certificate's key (``x5t`` or ``x5t#S256`` header).

Errors carry Entra's shape: ``{"error", "error_description": "AADSTSnnnn: ...\\r\\nTrace ID...",
"error_codes": [n], "timestamp", "trace_id", "correlation_id", "error_uri"}``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from emulators.httpd import App, Request, Response
from emulators.tenant.tokens import RESOURCES, TokenIssuer

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class AppRegistration:
    """An app registration: a client secret and/or certificates, and granted roles per audience."""

    client_id: str
    name: str
    secret: str = ""
    certificates: dict[str, x509.Certificate] = field(default_factory=dict)  # b64url thumbprint -> cert
    roles: dict[str, list[str]] = field(default_factory=dict)

    def add_certificate(self, cert: x509.Certificate) -> None:
        der = cert.public_bytes(serialization.Encoding.DER)
        for digest in (hashlib.sha1(der).digest(), hashlib.sha256(der).digest()):  # noqa: S324 - x5t is SHA-1
            self.certificates[base64.urlsafe_b64encode(digest).rstrip(b"=").decode()] = cert


class AadError(Exception):
    """A token-endpoint failure with its AADSTS code."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.code, self.description = status, error, code, description

    def response(self) -> Response:
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        desc = (
            f"AADSTS{self.code}: {self.description}\r\nTrace ID: {trace}\r\n"
            f"Correlation ID: {corr}\r\nTimestamp: {stamp}"
        )
        body = {
            "error": self.error,
            "error_description": desc,
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        return Response.json(body, self.status, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})


def tenant_not_found(tenant: str) -> AadError:
    return AadError(
        400,
        "invalid_tenant" if tenant else "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the "
        "correct cloud. Check with your subscription administrator, this may happen if there are no active "
        "subscriptions for the tenant.",
    )


class Identity:
    """The tenant's directory: app registrations and the token endpoint."""

    def __init__(
        self,
        tenant_id: str,
        domain: str,
        issuer: TokenIssuer,
        token_lifetime: Callable[[], float],
    ) -> None:
        self.tenant_id = tenant_id
        self.domain = domain
        self.issuer = issuer
        self.token_lifetime = token_lifetime
        self.apps: dict[str, AppRegistration] = {}
        self._lock = threading.Lock()
        self.tokens_issued = 0
        self._app: App | None = None

    def knows_tenant(self, tenant: str) -> bool:
        return tenant.lower() in (self.tenant_id.lower(), self.domain.lower())

    def register(self, app: AppRegistration) -> AppRegistration:
        with self._lock:
            self.apps[app.client_id] = app
        return app

    # ------------------------------------------------------------------ routes
    @property
    def base(self) -> str:
        """scheme://host:port of the serving emulator."""
        return self._app.base_url if self._app is not None else ""

    def install(self, app: App) -> None:
        self._app = app
        t = r"/(?P<tenant>[^/]+)"
        app.route("GET", t + r"/v2\.0/\.well-known/openid-configuration", self.openid_configuration)
        app.route("GET", t + r"/\.well-known/openid-configuration", self.openid_configuration_v1)
        app.route("GET", t + r"/discovery/v2\.0/keys", self.keys)
        app.route("GET", t + r"/discovery/keys", self.keys)
        app.route("GET", r"/common/discovery/instance", self.instance_discovery)
        app.route("POST", t + r"/oauth2/v2\.0/token", self.token)

    def _tenant(self, request: Request) -> str:
        assert request.match is not None
        return request.match.group("tenant")

    def openid_configuration(self, request: Request, version: str = "v2.0") -> Response:
        tenant = self._tenant(request)
        if not self.knows_tenant(tenant):
            return tenant_not_found(tenant).response()
        base, tid = self.base, self.tenant_id
        v = "/v2.0" if version == "v2.0" else ""
        doc = {
            "token_endpoint": f"{base}/{tid}/oauth2{v}/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/{tid}/discovery{v}/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{tid}/v2.0" if v else f"https://sts.windows.net/{tid}/",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/{tid}/oauth2{v}/authorize",
            "device_authorization_endpoint": f"{base}/{tid}/oauth2{v}/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tid}/oauth2{v}/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "ver", "oid", "roles"],
            "kerberos_endpoint": f"{base}/{tid}/kerberos",
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }
        return Response.json(doc)

    def openid_configuration_v1(self, request: Request) -> Response:
        return self.openid_configuration(request, version="v1")

    def keys(self, request: Request) -> Response:
        tenant = self._tenant(request)
        if tenant != "common" and not self.knows_tenant(tenant):
            return tenant_not_found(tenant).response()
        return Response.json(self.issuer.jwks())

    def instance_discovery(self, request: Request) -> Response:
        base = self.base
        host = base.split("://", 1)[-1]
        endpoint = request.query.get("authorization_endpoint", "")
        tenant = endpoint.split("://", 1)[-1].split("/")[1] if endpoint.count("/") >= 3 else "common"
        return Response.json(
            {
                "tenant_discovery_endpoint": f"{base}/{tenant}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            }
        )

    def token(self, request: Request) -> Response:
        try:
            return self._token(request)
        except AadError as exc:
            return exc.response()

    def _token(self, request: Request) -> Response:
        tenant = self._tenant(request)
        if not self.knows_tenant(tenant):
            raise tenant_not_found(tenant)
        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        basic_id, basic_secret = _basic_auth(request.header("authorization"))
        grant = form.get("grant_type", "")
        if not grant:
            raise missing_parameter("grant_type")
        if grant != "client_credentials":
            raise AadError(
                400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'."
            )
        client_id = form.get("client_id") or basic_id
        if not client_id:
            raise missing_parameter("client_id")
        app = self.apps.get(client_id)
        if app is None:
            raise AadError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{self.domain}'. "
                "This can happen if the application has not been installed by the administrator of the tenant or "
                "consented to by any user in the tenant. You may have sent your authentication request to the "
                "wrong tenant.",
            )
        secret = form.get("client_secret") or basic_secret
        assertion = form.get("client_assertion", "")
        if assertion:
            if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
                raise AadError(
                    400,
                    "invalid_request",
                    50027,
                    "The client_assertion_type must be 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.",
                )
            self._check_assertion(app, assertion, request)
            certificate = True
        elif secret:
            if not app.secret or secret != app.secret:
                raise AadError(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                    f"secret value, not the client secret ID, for a secret added to app '{client_id}'.",
                )
            certificate = False
        else:
            raise AadError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        scope = form.get("scope", "")
        if not scope:
            raise missing_parameter("scope")
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise AadError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a scope "
                "value with /.default suffixed to the resource identifier (application ID URI).",
            )
        resource = scopes[0][: -len("/.default")].rstrip("/")
        audience = RESOURCES.get(resource) or RESOURCES.get(resource.lower())
        if audience is None:
            raise AadError(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named {self.domain}. "
                "This can happen if the application has not been installed by the administrator of the tenant or "
                "consented to by any user in the tenant. You might have sent your authentication request to the "
                "wrong tenant.",
            )
        token, expires_in = self.issuer.issue(
            resource if resource.startswith("https://") else audience,
            app.client_id,
            app.roles.get(audience, []),
            lifetime=self.token_lifetime(),
            app_name=app.name,
            certificate=certificate,
        )
        with self._lock:
            self.tokens_issued += 1
        return Response.json(
            {"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in, "access_token": token},
            headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

    def _check_assertion(self, app: AppRegistration, assertion: str, request: Request) -> None:
        def fail(reason: str, code: int = 700027) -> AadError:
            return AadError(401, "invalid_client", code, f"Client assertion failed signature validation. {reason}")

        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise AadError(
                400, "invalid_request", 50027, "Invalid JWT token. The token is not in a valid format."
            ) from None
        thumb = str(header.get("x5t#S256") or header.get("x5t") or "")
        cert = app.certificates.get(thumb.rstrip("="))
        if cert is None:
            raise fail(
                f"[Reason - The key was not found., Thumbprint of key used by client: '{_hex_thumbprint(thumb)}', "
                f"Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys "
                f"for app Id '{app.client_id}'.]"
            )
        alg = header.get("alg")
        if alg not in ("RS256", "PS256"):
            raise fail(f"[Reason - The algorithm '{alg}' is not supported.]")
        base, tenant = self.base, self._tenant(request)
        audiences = [f"{base}/{tid}/oauth2/v2.0/token" for tid in {self.tenant_id, tenant, self.domain}] + [
            f"{base}/{self.tenant_id}/oauth2/token"
        ]
        try:
            claims = jwt.decode(
                assertion,
                cert.public_key(),  # type: ignore[arg-type]
                algorithms=[str(alg)],
                audience=audiences,
                options={"require": ["exp", "aud", "iss", "sub"]},
                leeway=300,
            )
        except jwt.ExpiredSignatureError:
            raise AadError(
                401, "invalid_client", 700024, "Client assertion is not within its valid time range."
            ) from None
        except jwt.InvalidAudienceError:
            raise AadError(
                401,
                "invalid_client",
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter or the audience is "
                "not the token endpoint.",
            ) from None
        except jwt.PyJWTError as exc:
            raise fail(f"[Reason - {type(exc).__name__}.]") from None
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            raise AadError(
                401,
                "invalid_client",
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
            )


def missing_parameter(name: str) -> AadError:
    return AadError(400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'.")


def _basic_auth(value: str) -> tuple[str, str]:
    scheme, _, data = value.partition(" ")
    if scheme.lower() != "basic" or not data:
        return "", ""
    try:
        user, _, password = base64.b64decode(data.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    from urllib.parse import unquote_plus

    return unquote_plus(user), unquote_plus(password)


def _hex_thumbprint(b64: str) -> str:
    try:
        return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex().upper()
    except (binascii.Error, ValueError):
        return b64


def load_certificate(pem: bytes | str) -> x509.Certificate:
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificate(data)


def make_certificate(common_name: str = "dlpfwd-test-app") -> tuple[str, str]:
    """A self-signed RSA certificate and key (PEM strings), for certificate-auth tests."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem
