"""``[serve]``: settings of the inbound status-change endpoint (``dlpfwd serve``).

Built by :func:`forwarder.config.parse_config` like ``[forwarder]`` (key paths in errors);
:func:`problems` adds the checks that need to know how the endpoint is started (TLS is
required unless ``--insecure-plain-http``; at least one way to authenticate).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from forwarder.settings import Secret, setting

#: Shortest accepted HMAC secret / bearer token (characters): a guessable credential on a
#: network endpoint is refused at start-up rather than discovered later.
MIN_SECRET_LENGTH = 16


@dataclass
class ServeSettings:
    """``[serve]``: where ``dlpfwd serve`` listens, its TLS identity, its credentials and limits."""

    bind: str = setting("127.0.0.1", doc="address to listen on ('0.0.0.0' or '::' for every interface)")
    port: int = setting(8443, doc="TCP port (0 = a free one, printed at start)", minimum=0, maximum=65535)
    tls_cert: str = setting("", doc="PEM certificate (chain) of the endpoint; required unless --insecure-plain-http")
    tls_key: str = setting("", doc="PEM private key of tls_cert ('' = the key is in tls_cert)")
    tls_client_ca: str = setting("", doc="PEM CA bundle: when set, clients must present a certificate it signed")
    hmac_secret: Secret | None = setting(None, doc="HMAC-SHA256 key of signed requests (${ENV} or file:)")
    hmac_previous_secret: Secret | None = setting(
        None, doc="the previous HMAC key, still accepted while clients move to hmac_secret (rotation)"
    )
    bearer_token: Secret | None = setting(
        None, doc="token accepted as 'Authorization: Bearer <token>' (${ENV} or file:)"
    )
    max_body: int = setting(65536, doc="largest request body in bytes (413 above)", minimum=1024, maximum=1048576)
    replay_window: float = setting(
        300.0,
        doc="seconds a signed request's timestamp may differ from the clock (401 outside)",
        minimum=10,
        maximum=3600,
    )
    max_connections: int = setting(32, doc="connections served at once; more are refused with 503", minimum=1)
    request_timeout: float = setting(
        10.0, doc="seconds a client may take to send a request (slow clients are disconnected)", minimum=1
    )
    source: str = setting(
        "",
        doc="graph_security source whose app applies accepted changes to Defender ('' = the only one); "
        "not used when a servicenow sink has [sinks.sync] enabled (its sync applies them)",
    )
    apply_interval: float = setting(
        10.0, doc="seconds between passes retrying deferred changes (an accepted change is applied at once)", minimum=1
    )
    change_id_retention: float = setting(
        604800.0,
        doc="seconds an accepted changeId is remembered for idempotency (7 days; more than replay_window)",
        minimum=3600,
    )


def configured(settings: ServeSettings | None) -> bool:
    """Whether the configuration has a ``[serve]`` table that sets anything (the loader builds
    the defaults when there is none): ``dlpfwd check`` checks the endpoint only then."""
    return settings is not None and settings != ServeSettings()


def problems(settings: ServeSettings, insecure: bool = False, path: str = "serve") -> list[str]:
    """Every reason ``settings`` cannot start the endpoint, each with its key path."""
    found: list[str] = []
    if not insecure:
        if not settings.tls_cert:
            found.append(
                f"{path}.tls_cert: required (a PEM certificate); only local tests may use --insecure-plain-http"
            )
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            value = getattr(settings, name)
            if value and not os.path.isfile(value):
                found.append(f"{path}.{name}: no such file: {value}")
    if not settings.hmac_secret and not settings.bearer_token:
        found.append(f"{path}: set hmac_secret or bearer_token (or both): the endpoint refuses anonymous requests")
    for name in ("hmac_secret", "hmac_previous_secret", "bearer_token"):
        secret = getattr(settings, name)
        if secret is not None and len(secret.reveal()) < MIN_SECRET_LENGTH:
            found.append(f"{path}.{name}: expected at least {MIN_SECRET_LENGTH} characters")
    if settings.hmac_previous_secret and not settings.hmac_secret:
        found.append(f"{path}.hmac_previous_secret: set only together with hmac_secret")
    if settings.change_id_retention <= settings.replay_window:
        found.append(f"{path}.change_id_retention: must be longer than replay_window ({settings.replay_window:g} s)")
    return found
