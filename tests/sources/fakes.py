"""Small scripted fakes of the Microsoft APIs for source unit tests (httpx.MockTransport)."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

from forwarder.auth import AuthSettings
from forwarder.source import SourceContext

TENANT = "8f0c8c3e-1f1e-4a54-9a7e-0d5b6c1a2b3c"
PUBLISHER = "11111111-2222-3333-4444-555555555555"
MANAGE = "https://manage.test"
GRAPH = "https://graph.test"


class FakeTokens:
    """Counts tokens handed out; ``invalidate`` moves to the next token."""

    def __init__(self) -> None:
        self.generation = 1
        self.invalidated = 0

    def token(self, scope: str) -> str:
        return f"token-{self.generation}"

    def invalidate(self, scope: str) -> None:
        self.invalidated += 1
        self.generation += 1


class Context(SourceContext):
    """A SourceContext with an in-memory ledger and counters (what the runtime provides)."""

    def __init__(self, name: str = "test") -> None:
        self.ledger: dict[str, str] = {}
        self.counters: dict[str, int] = {}
        super().__init__(
            name,
            logging.getLogger(f"test.{name}"),
            ledger_status=lambda ids: {i: self.ledger[i] for i in ids if i in self.ledger},
            count=self._add,
        )

    def _add(self, name: str, n: int) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


def auth() -> AuthSettings:
    return AuthSettings(tenant_id=TENANT, client_id="app")


def drain(gen, ctx: Context | None = None) -> tuple[list, dict | None]:
    """Consume batches like the host: records collected, units written to the ledger, last cursor kept."""
    records: list = []
    cursor = None
    for batch in gen:
        records.extend(batch.records)
        if ctx is not None:
            for u in batch.units:
                ctx.ledger[u.id] = u.status
        if batch.cursor is not None:
            cursor = batch.cursor
    return records, cursor


def http_date(t: dt.datetime) -> str:
    return email.utils.format_datetime(t.astimezone(dt.UTC), usegmt=True)


class Recorder:
    """Wraps a handler; keeps every request for assertions."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def q(request: httpx.Request) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, content=orjson.dumps(data), headers={"Content-Type": "application/json", **(headers or {})}
    )


def error(status: int, code: str, message: str = "", headers: dict[str, str] | None = None) -> httpx.Response:
    return json_response({"error": {"code": code, "message": message or code}}, status, headers)
