"""Secrets and credentials never reach a log line."""

from __future__ import annotations

import io
import logging

from forwarder.logs import redact, register_secret, setup_logging


def test_registered_secrets_and_credential_patterns_are_redacted() -> None:
    register_secret("s3cr3t-value-xyz")
    assert redact("token s3cr3t-value-xyz!") == "token ***!"
    assert "abcdefghijkl" not in redact("Authorization: Bearer abcdefghijkl.mnop")
    assert "eyJhbGciOiJSUzI1NiJ9" not in redact("jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig")
    assert "verysecret" not in redact("POST client_secret=verysecret&grant_type=client_credentials")
    assert "abc123token" not in redact("Authorization: Splunk abc123token")
    assert redact("nothing here") == "nothing here"


def test_log_records_and_tracebacks_are_redacted() -> None:
    register_secret("hunter2-long-secret")
    stream = io.StringIO()
    setup_logging("debug", stream=stream)
    log = logging.getLogger("dlpfwd.test")
    log.warning("connecting with %s", "hunter2-long-secret")
    try:
        raise RuntimeError("failed with hunter2-long-secret")
    except RuntimeError:
        log.exception("boom Authorization: Bearer zzzzzzzzzzzz")
    out = stream.getvalue()
    assert "hunter2-long-secret" not in out and "zzzzzzzzzzzz" not in out
    assert out.count("***") >= 3
    setup_logging("warning")


def test_configuration_problems_about_secret_keys_stay_readable() -> None:
    problem = "sources[0].auth.client_secret: environment variable NOT_SET is not set"
    assert redact(problem) == problem
    assert redact("sinks[1].token: expected a string") == "sinks[1].token: expected a string"
    # The credential shapes themselves are still caught.
    assert "abc123" not in redact("POST body client_secret=abc123&grant_type=x")
    assert "abc123" not in redact("token: abc123")
