from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulators.httpd import EmulatorServer
from tests.sentinel.helpers import Issuer, ScriptedTokens, make_app


@pytest.fixture(scope="session")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def emulator(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    cert_dir = tmp_path_factory.getbasetemp() / "sentinel-certs"
    with EmulatorServer(make_app(issuer), cert_dir=cert_dir) as server:
        yield server


@pytest.fixture
def tokens(issuer: Issuer) -> ScriptedTokens:
    return ScriptedTokens(issuer)
