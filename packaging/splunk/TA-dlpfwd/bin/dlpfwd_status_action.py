"""Splunk alert action ``dlpfwd_status``: set a Defender XDR incident's status through ``dlpfwd serve``.

Splunk runs ``dlpfwd_status_action.py --execute`` with the alert payload as JSON on stdin
(``payload_format = json``): ``configuration`` (the action's parameters, tokens such as
``$result.owner$`` already substituted), ``result`` (the first result, or the one result with
"Trigger: For each result"), ``sid``, ``search_name``, ``server_uri``, ``session_key``, ``app``.

The action maps the result to one status change of ``dlpfwd serve`` (``docs/itsm.md``,
"Inbound endpoint"):

* ``incidentId`` from the result field named by ``incident_field`` (default ``incident_id``;
  the first value of a multivalue field; an ``incident:`` prefix is dropped);
* ``status``, ``classification``, ``determination``, ``assignedTo``, ``comment`` from the
  parameters of the same names (empty = leave unchanged);
* ``changeId`` = ``splunk:<sid>:<incident>`` (a hash when longer than 128 characters), so a
  re-run of the same alert for the same incident is recognised as a repeat; ``timestamp`` =
  the alert's trigger time read from the sid (else now); ``source`` = ``splunk:<search name>``.

It signs the body with HMAC-SHA256 (``auth = hmac``, the default) or sends a bearer token
(``auth = bearer``). The secret is read from ``secret_file`` when set, else from Splunk's
credential store: realm ``dlpfwd_serve``, user ``hmac_secret`` or ``bearer_token`` in the
TA-dlpfwd app (``storage/passwords``, with the alert's session key). The POST goes to ``url``
over HTTPS, verified against ``ca_file`` (or the system CAs); 429, 5xx and connection errors
are retried (3 attempts, ``Retry-After`` honoured). Standard library only: it runs under
Splunk's own Python without the add-on's vendored libraries.

Exit codes: 0 accepted (or a repeat), 2 refused by the endpoint or misconfigured, 3 the
endpoint could not be reached. Messages go to stderr (``splunkd.log``, component
``sendmodalert``), never with a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any

APP = "TA-dlpfwd"
REALM = "dlpfwd_serve"
CHANGES_PATH = "/v1/status-changes"
PARAMS = (("status", "status"), ("classification", "classification"), ("determination", "determination"),
          ("assigned_to", "assignedTo"), ("comment", "comment"))  # fmt: skip
ATTEMPTS = 3
EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 2, 3
_SID_TIME = re.compile(r"(?:_at_|^(?:rt_)?)(\d{9,11})(?:[._]|$)")
_VISIBLE = re.compile(r"^[\x21-\x7e]{1,128}$")


class ActionError(Exception):
    """The action cannot run as configured (exit 2); the message is safe to log."""


def log(level: str, message: str) -> None:
    print(f"{level} {message}", file=sys.stderr, flush=True)


def incident_id(result: dict[str, Any], field: str) -> str:
    """The Defender XDR incident id in ``result[field]``."""
    value = result.get(field)
    if isinstance(value, list):
        value = next((v for v in value if v), "")
    text = str(value or "").strip()
    if text.startswith("incident:"):
        text = text[len("incident:") :]
    if not text.isdigit() or len(text) > 20:
        raise ActionError(f"the result field {field!r} does not hold a Defender XDR incident id (digits)")
    return text


def trigger_time(sid: str) -> datetime:
    """When the alert ran: the epoch seconds in the sid (scheduled ``..._at_<epoch>_<n>``,
    ad hoc ``<epoch>.<n>``), else now."""
    match = _SID_TIME.search(sid)
    now = time.time()
    when = float(match.group(1)) if match else now
    if when > now:
        when = now
    return datetime.fromtimestamp(when, timezone.utc)  # noqa: UP017 - Splunk's Python may predate 3.11


def change_id(sid: str, incident: str) -> str:
    readable = f"splunk:{sid}:{incident}"
    if sid and _VISIBLE.match(readable):
        return readable
    return "splunk:" + hashlib.sha256(f"{sid}|{incident}".encode()).hexdigest()[:40]


def build_change(payload: dict[str, Any]) -> dict[str, str]:
    """The JSON body of the status change for this alert payload."""
    config = payload.get("configuration") or {}
    result = payload.get("result") or {}
    incident = incident_id(result, (config.get("incident_field") or "incident_id").strip())
    sid = str(payload.get("sid") or "")
    change = {
        "changeId": change_id(sid, incident),
        "incidentId": incident,
        "timestamp": trigger_time(sid).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for param, name in PARAMS:
        value = str(config.get(param) or "")
        if value.strip():
            change[name] = value if name == "comment" else value.strip()
    if len(change) == 3:
        raise ActionError("nothing to change: set status, classification, determination, assigned_to or comment")
    source = "splunk:" + str(payload.get("search_name") or "ad hoc")
    change["source"] = "".join(c if c.isprintable() else " " for c in source)[:128]
    return change


def endpoint_url(config: dict[str, Any]) -> str:
    url = str(config.get("url") or "").strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        raise ActionError("url: expected the https URL of dlpfwd serve, e.g. https://dlpfwd.example:8443")
    if parts.path in ("", "/"):
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, CHANGES_PATH, "", ""))
    return url


def _loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("127.0.0.1", "::1", "localhost")


def read_secret(payload: dict[str, Any], auth: str) -> str:
    """The HMAC key or bearer token: ``secret_file``, else Splunk's credential store."""
    config = payload.get("configuration") or {}
    name = "hmac_secret" if auth == "hmac" else "bearer_token"
    path = str(config.get("secret_file") or "").strip()
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                secret = handle.read().strip()
        except OSError as exc:
            raise ActionError(f"secret_file: cannot read {path}: {exc.strerror}") from None
        if not secret:
            raise ActionError(f"secret_file: {path} is empty")
        return secret
    server, session = str(payload.get("server_uri") or ""), str(payload.get("session_key") or "")
    if not server or not session:
        raise ActionError("no secret_file and no session key to read the credential store")
    entity = urllib.parse.quote(f"{REALM}:{name}:", safe="")
    url = f"{server.rstrip('/')}/servicesNS/nobody/{APP}/storage/passwords/{entity}?output_mode=json"
    if not server.startswith(("https://", "http://")):
        raise ActionError("server_uri of the payload is not an http(s) URL")
    request = urllib.request.Request(url, headers={"Authorization": f"Splunk {session}"})  # noqa: S310 - checked
    # splunkd's management port on this host has Splunk's self-signed certificate by default;
    # the session key only ever goes to the splunkd of this host (loopback).
    context = ssl._create_unverified_context() if _loopback(server) else ssl.create_default_context()  # noqa: S323
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310 - checked
            data = json.loads(response.read().decode("utf-8"))
        secret = str(data["entry"][0]["content"]["clear_password"])
    except urllib.error.HTTPError as exc:
        hint = " (store it first, see docs/splunk.md)" if exc.code == 404 else ""
        raise ActionError(f"credential store: {REALM}:{name} not readable: HTTP {exc.code}{hint}") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ActionError(f"credential store: {REALM}:{name} not readable: {type(exc).__name__}") from None
    if not secret:
        raise ActionError(f"credential store: {REALM}:{name} is empty")
    return secret


def sign(body: bytes, key: str, now: float) -> dict[str, str]:
    """``forwarder.signing.sign``: HMAC-SHA256 over ``"<timestamp>." + body``."""
    stamp = str(int(now))
    digest = hmac.new(key.encode("utf-8"), stamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Dlpfwd-Timestamp": stamp, "X-Dlpfwd-Signature": "sha256=" + digest}


def tls_context(config: dict[str, Any]) -> ssl.SSLContext:
    ca_file = str(config.get("ca_file") or "").strip()
    if ca_file and not os.path.isfile(ca_file):
        raise ActionError(f"ca_file: no such file: {ca_file}")
    return ssl.create_default_context(cafile=ca_file or None)


def post(url: str, body: bytes, auth: str, secret: str, context: ssl.SSLContext, timeout: float) -> int:
    """POST the change; retry 429/5xx and connection errors. Returns the exit code."""
    for attempt in range(1, ATTEMPTS + 1):
        headers = {"Content-Type": "application/json", "User-Agent": "TA-dlpfwd dlpfwd_status"}
        if auth == "hmac":
            headers.update(sign(body, secret, time.time()))
        else:
            headers["Authorization"] = f"Bearer {secret}"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - https only
        wait = 2.0 * attempt
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
                answer = json.loads(response.read().decode("utf-8") or "{}")
                log("INFO", f"dlpfwd_status: incident {answer.get('incidentId')} change {answer.get('changeId')} "
                            f"accepted (HTTP {response.status}, duplicate {answer.get('duplicate')})")  # fmt: skip
                return EXIT_OK
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if exc.code in (429, 500, 502, 503, 504) and attempt < ATTEMPTS:
                wait = _retry_after(exc.headers.get("Retry-After"), wait)
                log("WARN", f"dlpfwd_status: HTTP {exc.code} {detail}; retry in {wait:.0f} s")
            else:
                log("ERROR", f"dlpfwd_status: refused: HTTP {exc.code} {detail}")
                return EXIT_REFUSED if exc.code < 500 and exc.code != 429 else EXIT_UNREACHABLE
        except (OSError, ValueError) as exc:  # URLError, timeouts, TLS failures
            reason = getattr(exc, "reason", exc)
            if attempt == ATTEMPTS or isinstance(reason, ssl.SSLCertVerificationError):  # retrying will not help
                log("ERROR", f"dlpfwd_status: cannot reach {url}: {reason}")
                return EXIT_UNREACHABLE
            log("WARN", f"dlpfwd_status: cannot reach {url}: {reason}; retry in {wait:.0f} s")
        time.sleep(wait)
    return EXIT_UNREACHABLE


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read().decode("utf-8"))["error"]
        return f"{error.get('code', '')}: {error.get('message', '')}"[:500]
    except (OSError, ValueError, KeyError, TypeError):
        return str(exc.reason)[:200]


def _retry_after(value: str | None, default: float) -> float:
    try:
        return min(30.0, max(0.0, float(value or default)))
    except ValueError:
        return default


def run(payload: dict[str, Any]) -> int:
    config = payload.get("configuration") or {}
    try:
        auth = str(config.get("auth") or "hmac").strip().lower()
        if auth not in ("hmac", "bearer"):
            raise ActionError("auth: expected hmac or bearer")
        url = endpoint_url(config)
        change = build_change(payload)
        context = tls_context(config)
        timeout = float(config.get("timeout") or 30)
        secret = read_secret(payload, auth)
    except (ActionError, ValueError) as exc:
        log("ERROR", f"dlpfwd_status: {exc}")
        return EXIT_REFUSED
    body = json.dumps(change, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return post(url, body, auth, secret, context, timeout)


def main(argv: list[str]) -> int:
    if "--execute" not in argv[1:]:
        log("ERROR", "dlpfwd_status: run by Splunk with --execute and the alert payload on stdin")
        return EXIT_REFUSED
    try:
        payload = json.loads(sys.stdin.read())
    except ValueError:
        log("ERROR", "dlpfwd_status: the payload on stdin is not JSON (payload_format = json)")
        return EXIT_REFUSED
    if not isinstance(payload, dict):
        log("ERROR", "dlpfwd_status: the payload on stdin is not a JSON object")
        return EXIT_REFUSED
    return run(payload)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
