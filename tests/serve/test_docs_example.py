"""The curl + openssl signing example of docs/itsm.md ("Inbound endpoint") works as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import HMAC_KEY, pending

DOC = Path(__file__).resolve().parents[2] / "docs" / "itsm.md"


def example() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Inbound endpoint (dlpfwd serve)") :]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    (script,) = [b for b in blocks if "openssl dgst" in b]
    return script


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="curl and openssl are needed")
def test_documented_curl_and_openssl_example_is_accepted(server, certs, store):
    script = (
        example().replace("https://dlpfwd.example:8443", server.url).replace("--cacert ca.pem", f"--cacert {certs.ca}")
    ).rstrip()
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script + " --fail --silent --show-error"],
        env={**os.environ, "DLPFWD_SERVE_HMAC": HMAC_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"changeId":"soar-8812"' in result.stdout and '"duplicate":false' in result.stdout
    (item,) = pending(store)
    assert (item.change.status, item.change.classification, item.change.determination) == (
        "resolved",
        "falsePositive",
        "notMalicious",
    )
