"""The emulator HTTP base: one Date header (the app's own when it sets one), 413 before reading a large body."""

from __future__ import annotations

import httpx

from emulators.httpd import App, EmulatorServer, Request, Response


def _app() -> App:
    app = App()
    app.max_body = 1000
    app.route("GET", "/clock", lambda r: Response.json({}, headers={"Date": "Mon, 01 Jan 2024 00:00:00 GMT"}))
    app.route("GET", "/plain", lambda r: Response.json({}))

    def echo(request: Request) -> Response:
        return Response.json({"n": len(request.body)})

    app.route("POST", "/echo", echo)
    return app


def test_one_date_header_and_the_apps_own_wins(tmp_path) -> None:
    with EmulatorServer(_app(), tls=True, cert_dir=tmp_path) as server:
        import ssl

        with httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=server.ca_file)) as client:
            clock = client.get("/clock")
            plain = client.get("/plain")
    assert clock.headers.get_list("Date") == ["Mon, 01 Jan 2024 00:00:00 GMT"]
    assert len(plain.headers.get_list("Date")) == 1


def test_oversized_body_is_refused_before_the_handler(tmp_path) -> None:
    with EmulatorServer(_app(), tls=False) as server, httpx.Client(base_url=server.url) as client:
        assert client.post("/echo", content=b"x" * 10).json() == {"n": 10}
        response = client.post("/echo", content=b"x" * 5000)
    assert response.status_code == 413


def test_a_silent_client_does_not_stall_the_server(tmp_path) -> None:
    import socket
    import ssl

    with EmulatorServer(_app(), tls=True, cert_dir=tmp_path) as server:
        silent = socket.create_connection((server.host, server.port))  # connects, never handshakes
        try:
            ctx = ssl.create_default_context(cafile=server.ca_file)
            with httpx.Client(base_url=server.url, verify=ctx, timeout=5) as client:
                assert client.get("/plain").status_code == 200
        finally:
            silent.close()
