"""Helpers for end-to-end tests: a tenant emulator over TLS, a forwarder configuration that
reads it into a file sink, and readers of what arrived."""

from __future__ import annotations

import email.utils
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from emulators.httpd import Request, Response
from forwarder.config import Config, load_config
from forwarder.plugins import PluginHost


def tolerate_advanced_clock(monkeypatch: Any) -> None:
    """Work around the tenant emulator's verifier, which lets PyJWT check ``iat`` against the
    *real* clock: tokens issued after ``emu.clock.advance`` would be refused as "invalid
    signature". Only the emulator's own check is relaxed (exp/nbf are still checked by it
    against the emulated clock)."""
    import jwt

    from emulators.tenant import tokens

    original: Any = jwt.decode

    def decode(*args: Any, **kwargs: Any) -> Any:
        options = dict(kwargs.pop("options", None) or {})
        options["verify_iat"] = False
        return original(*args, options=options, **kwargs)

    monkeypatch.setattr(tokens.jwt, "decode", decode)


@contextmanager
def serve(emu: Any) -> Iterator[Any]:
    """Serve ``emu`` over TLS. Its ``Date`` header follows the *emulated* clock, as a real
    server's follows its own (the sources correct their windows from it)."""
    inner = emu.app.handle

    def handle(request: Request) -> Response:
        response: Response = inner(request)
        response.headers.setdefault("Date", email.utils.formatdate(emu.clock.time(), usegmt=True))
        return response

    emu.app.handle = handle
    server = emu.serve(tls=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def auth_toml(emu: Any, server: Any, refresh_margin: float = 300.0) -> str:
    return f"""
[sources.auth]
tenant_id = "{emu.tenant_id}"
client_id = "{emu.client_id}"
client_secret = "{emu.client_secret}"
authority = "{server.url}"
refresh_margin = {refresh_margin}
[sources.http]
ca_bundle = "{server.ca_file}"
"""


def management_activity_source(emu: Any, server: Any, name: str = "o365", **settings: str | float) -> str:
    """A ``[[sources]]`` body for a ``management_activity`` source reading ``emu`` served by
    ``server``; ``settings`` are further keys (strings quoted, numbers as written)."""
    lines = [
        f'name = "{name}"',
        'type = "management_activity"',
        f'management_url = "{server.url}"',
        f'publisher_id = "{emu.publisher_id}"',
    ]
    return "\n".join(lines + _toml_lines(settings)) + "\n"


def graph_source(server: Any, name: str = "graph", kind: str = "graph_security", **settings: str | float) -> str:
    """A ``[[sources]]`` body for a Graph source (``graph_security`` or ``audit_search``) reading
    the emulator served by ``server``; ``settings`` are further keys (as in
    ``management_activity_source``)."""
    lines = [f'name = "{name}"', f'type = "{kind}"', f'graph_url = "{server.url}"']
    return "\n".join(lines + _toml_lines(settings)) + "\n"


def _toml_lines(settings: dict[str, str | float]) -> list[str]:
    """``key = value`` lines: strings quoted, booleans as ``true``/``false``, numbers as written."""
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    return lines


def config_text(
    emu: Any, server: Any, tmp: Path, sources: list[str], refresh_margin: float = 300.0, sink_extra: str = ""
) -> str:
    """A configuration with the given ``[[sources]]`` bodies (auth and http appended) and a file sink."""
    parts = [f'[forwarder]\nstate_dir = "{tmp / "state"}"\n']
    for body in sources:
        parts.append("[[sources]]\n" + body.strip() + "\n" + auth_toml(emu, server, refresh_margin))
    parts.append(f'[[sinks]]\nname = "file"\ntype = "file"\npath = "{tmp / "out" / "events.jsonl"}"\n{sink_extra}')
    return "\n".join(parts)


def load(text: str) -> tuple[Config, PluginHost]:
    host = PluginHost().load()
    return load_config(text, host), host


def delivered(tmp: Path) -> list[dict[str, Any]]:
    events = []
    for path in sorted((tmp / "out").glob("events*.jsonl")):  # the file sink rotates by size
        events += [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return events
