"""The emulator's control plane for out-of-process users (benchmarks, manual tests):

* ``GET /_emulator/stats`` -- request counters, injected faults, PublisherIdentifier accounting
* ``GET /_emulator/faults`` / ``POST /_emulator/faults`` (JSON object of knobs to change)
* ``POST /_emulator/clock`` (``{"advance_seconds": n}``) -- move emulated time forward
* ``GET /_emulator/expected?content_type=DLP.All`` -- ground-truth counts at emulated now

No token is needed: the server listens on loopback only and holds no real data.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import orjson

from emulators.httpd import App, Request, Response

if TYPE_CHECKING:
    from emulators.tenant.emulator import TenantEmulator


def _error(message: str, status: int = 400) -> Response:
    return Response.json({"error": {"code": "BadRequest", "message": message}}, status)


class Control:
    def __init__(self, emu: TenantEmulator) -> None:
        self.emu = emu

    def install(self, app: App) -> None:
        app.route("GET", r"/_emulator/stats", self.stats)
        app.route("GET", r"/_emulator/faults", self.get_faults)
        app.route("POST", r"/_emulator/faults", self.set_faults)
        app.route("POST", r"/_emulator/clock", self.clock)
        app.route("GET", r"/_emulator/expected", self.expected)

    def stats(self, request: Request) -> Response:
        return Response.json({**self.emu.stats(), "now": self.emu.clock.now().isoformat()})

    def get_faults(self, request: Request) -> Response:
        snap = self.emu.faults.snapshot()
        return Response.json({f.name: getattr(snap, f.name) for f in dataclasses.fields(snap)})

    def set_faults(self, request: Request) -> Response:
        try:
            changes = request.json()
        except orjson.JSONDecodeError:
            return _error("body must be a JSON object of fault knobs")
        if not isinstance(changes, dict):
            return _error("body must be a JSON object of fault knobs")
        try:
            self.emu.faults.update(**changes)
        except TypeError as exc:
            return _error(str(exc))
        return self.get_faults(request)

    def clock(self, request: Request) -> Response:
        try:
            body: Any = request.json()
            seconds = float(body["advance_seconds"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return _error('body must be {"advance_seconds": <number>}')
        if seconds < 0:
            return _error("the emulated clock only moves forward")
        self.emu.clock.advance(seconds=seconds)
        return Response.json({"now": self.emu.clock.now().isoformat()})

    def expected(self, request: Request) -> Response:
        ct = request.query.get("content_type", "DLP.All")
        try:
            audit = self.emu.expected_audit_ids((ct,))
        except ValueError as exc:
            return _error(str(exc))
        return Response.json(
            {
                "content_type": ct,
                "audit_records": len(audit),
                "malformed_records": len(self.emu.expected_malformed_ids((ct,))),
                "blobs": len(self.emu.expected_blobs(ct)),
                "alerts": len(self.emu.expected_alert_ids()),
                "incidents": len(self.emu.expected_incident_ids()),
            }
        )
