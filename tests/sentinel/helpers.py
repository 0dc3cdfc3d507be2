"""Shared helpers of the Sentinel tests: token issuing, emulator + sink wiring, event factory."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import strategies as st

from emulators.logs_ingestion.app import Dcr, LogsIngestionApp
from emulators.tenant.tokens import TokenIssuer, TokenVerifier
from forwarder.auth import AuthSettings
from forwarder.schema import (
    DetectedValue,
    DlpEvent,
    Identity,
    Label,
    ObjectRef,
    PolicyMatch,
    RuleMatch,
    SensitiveType,
    to_json,
)
from forwarder.settings import HttpSettings, Secret
from forwarder.sink import Entry, SinkContext
from sinks.sentinel.columns import COLUMNS, STREAM
from sinks.sentinel.sink import SentinelSettings, SentinelSink

DCR = "dcr-0123456789abcdef0123456789abcdef"
APP = "11111111-2222-3333-4444-555555555555"
TENANT = "contoso-tenant"


class Issuer:
    """Signs RS256 tokens with the tenant emulator's issuer (as Entra ID does for client credentials)."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.issuer = TokenIssuer(self.key, TENANT)

    def token(self, aud: str = "https://monitor.azure.com", appid: str = APP, lifetime: float = 3600) -> str:
        if lifetime <= 0:  # an already expired token
            past = TokenIssuer(self.key, TENANT, now=lambda: time.time() + lifetime - 120)
            return past.issue(aud, appid, [], lifetime=60)[0]
        return self.issuer.issue(aud, appid, [], lifetime=lifetime)[0]

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(self.issuer.jwks(), leeway=60)


@dataclass
class ScriptedTokens:
    """A token provider handing out scripted tokens, then good ones; counts invalidations."""

    issuer: Issuer
    appid: str = APP
    first: list[str] = field(default_factory=list)
    invalidated: int = 0
    handed: list[str] = field(default_factory=list)

    def token(self, scope: str) -> str:
        token = self.first.pop(0) if self.first else self.issuer.token(scope.removesuffix("/.default"), self.appid)
        self.handed.append(token)
        return token

    def invalidate(self, scope: str) -> None:
        self.invalidated += 1


def make_app(issuer: Issuer, **kwargs: Any) -> LogsIngestionApp:
    streams = {STREAM: {c.name: c.type for c in COLUMNS}}
    return LogsIngestionApp(issuer.verifier(), [Dcr(DCR, streams, {APP})], **kwargs)


def make_sink(url: str, ca_file: str, tokens: Any = None, **overrides: Any) -> SentinelSink:
    http = HttpSettings(ca_bundle=ca_file, timeout=overrides.pop("timeout", 10.0))
    auth = AuthSettings(tenant_id=TENANT, client_id=APP, client_secret=Secret("not-used"))
    settings = SentinelSettings(endpoint=url, dcr_immutable_id=DCR, auth=auth, http=http, **overrides)
    sink = SentinelSink("sentinel", settings, SinkContext("sentinel", logging.getLogger("test.sentinel")))
    sink.tokens = tokens
    return sink


def event(i: int, **changes: Any) -> DlpEvent:
    ev = DlpEvent(
        id=f"evt-{i}",
        idempotency_key=f"evt-{i}@2026-11-23T10:00:00Z",
        kind="audit",
        operation="DlpRuleMatch",
        event_time="2026-11-23T10:00:00Z",
        updated_time="2026-11-23T10:00:00Z",
        ingest_time="2026-11-23T10:01:00Z",
        tenant_id=TENANT,
        source="contoso-audit",
        source_type="management_activity",
        record_type=11,
        workload="Exchange",
        severity="high",
        policies=[
            PolicyMatch(
                id="p1",
                name="U.S. Financial Data",
                rules=[RuleMatch(id="r1", name="High volume", severity="high", actions=["BlockAccess", "NotifyUser"])],
            )
        ],
        user=Identity(upn=f"user{i % 7}@contoso.com", object_id="oid-1", display_name="User"),
        sender=f"user{i % 7}@contoso.com",
        recipients=["a@fabrikam.com", "b@fabrikam.com"],
        object=ObjectRef(type="email", subject="Q4 numbers", message_id=f"<m{i}@contoso.com>", size=12345),
        sensitive_types=[
            SensitiveType(
                id="sit-cc",
                name="Credit Card Number",
                count=3,
                unique_count=3,
                confidence=85,
                detected_values=[DetectedValue(name="Credit Card Number", value="")],
            )
        ],
        labels=[Label(id="lbl-1", name="Confidential")],
    )
    for key, value in changes.items():
        setattr(ev, key, value)
    return ev


@st.composite
def generated_events(draw: st.DrawFn) -> DlpEvent:
    """:func:`event` with generated user, severity, recipients, object size, false-positive flag,
    sensitive-type names and counts, and policies (named after the user) with rule names and actions."""
    text = st.text(max_size=16)
    ev = event(
        1, severity=draw(st.sampled_from(["high", "Low", "weird", ""])), recipients=draw(st.lists(text, max_size=5))
    )
    ev.user.upn = upn = draw(text)
    ev.object.size = draw(st.one_of(st.none(), st.integers(0, 10**9)))
    ev.override.false_positive = draw(st.booleans())
    names = draw(st.lists(text, max_size=4))
    counts = draw(st.lists(st.integers(0, 10**6), max_size=4))
    # one sensitive type per generated (name, count); the event's own one when none
    template = ev.sensitive_types[0]
    drawn = [replace(template, name=name, count=count) for name, count in zip(names, counts, strict=False)]
    ev.sensitive_types = drawn or ev.sensitive_types
    actions = draw(st.lists(st.lists(st.sampled_from(["Block", "Notify", "Audit", ""]), max_size=3), max_size=3))
    ev.policies = [
        PolicyMatch(id=f"p{i}", name=upn, rules=[RuleMatch(id=f"r{i}", name=name, actions=acts)])
        for i, (acts, name) in enumerate(zip(actions, names or [""] * len(actions), strict=False))
    ]
    return ev


def entries(events: list[DlpEvent], start: int = 1) -> list[Entry]:
    return [Entry(start + n, to_json(ev)) for n, ev in enumerate(events)]
