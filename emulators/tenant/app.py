"""The emulator's HTTP application: identity, Graph security, audit queries and the
Management Activity API on one server, told apart by path."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate

from emulators.httpd import App, Request, Response


class TenantApp(App):
    """All routes of one emulated tenant. Components add their routes with ``install(app)``.

    Every response's ``Date`` header tells the emulated time (``now``), so clients that sync
    to the server clock follow ``emu.clock.advance(...)``.
    """

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.now = now
        self.route("GET", r"/", self.index)
        self.info: dict[str, str] = {}

    def handle(self, request: Request) -> Response:
        response = super().handle(request)
        response.headers.setdefault("Date", formatdate(self.now(), usegmt=True))
        return response

    def index(self, request: Request) -> Response:
        return Response.json({"emulator": "dlpfwd tenant emulator", **self.info})

    def not_found(self, request: Request) -> Response:
        if request.path.startswith("/api/"):
            return Response.json({"error": {"code": "AF20001", "message": f"No route for {request.path}."}}, 404)
        return Response.json(
            {"error": {"code": "BadRequest", "message": f"Resource not found for the segment '{request.path}'."}},
            404,
        )
