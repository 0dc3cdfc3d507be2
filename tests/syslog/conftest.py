"""Fixtures: a private rsyslogd with UDP, TCP, TLS and mutual-TLS inputs (module scope)."""

from __future__ import annotations

import pytest

from tests.syslog.certs import Pki, make_pki
from tests.syslog.rsyslog import RSYSLOGD, Rsyslog


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory, pki: Pki):
    if RSYSLOGD is None:
        pytest.skip("rsyslogd is not installed (Debian package rsyslog + rsyslog-gnutls; .ci/run installs them)")
    server = Rsyslog(tmp_path_factory.mktemp("rsyslog"), pki.ca, pki.server_cert, pki.server_key)
    server.start()
    yield server
    server.stop()
