"""The emulator's HTTP application: identity, Graph security, audit queries and the
Management Activity API on one server, told apart by path."""

from __future__ import annotations

from emulators.httpd import App, Request, Response


class TenantApp(App):
    """All routes of one emulated tenant. Components add their routes with ``install(app)``."""

    def __init__(self) -> None:
        super().__init__()
        self.route("GET", r"/", self.index)
        self.info: dict[str, str] = {}

    def index(self, request: Request) -> Response:
        return Response.json({"emulator": "dlpfwd tenant emulator", **self.info})

    def not_found(self, request: Request) -> Response:
        if request.path.startswith("/api/"):
            return Response.json({"error": {"code": "AF20001", "message": f"No route for {request.path}."}}, 404)
        return Response.json(
            {"error": {"code": "BadRequest", "message": f"Resource not found for the segment '{request.path}'."}},
            404,
        )
