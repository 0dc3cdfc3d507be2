"""An emulator of the Azure Monitor Logs Ingestion API, for tests and dry runs.

``POST /dataCollectionRules/{immutableId}/streams/{stream}?api-version=...`` behaves as the
service documents it (status codes, ``{"error": {"code", "message"}}`` bodies):

====  ==================================  =====================================================
204   accepted                            rows stored (undeclared columns dropped, as a DCR does)
400   ``MissingApiVersion`` /             api-version absent / not one of :data:`API_VERSIONS`
      ``UnsupportedApiVersion``
400   ``InvalidStream``                   the DCR declares no such stream
400   ``InvalidContentType``              Content-Type is not application/json
400   ``UnsupportedContentEncoding``      Content-Encoding other than gzip; ``InvalidPayload`` for a
                                          body that does not gunzip
400   ``InvalidPayload``                  body is not JSON, an array element is not an object, an
                                          ``int``/``long``/``real`` column holds a number beyond a
                                          64-bit real (``1e400``: infinite once parsed; JSON has no
                                          infinity), or (``strict``, off by default: the service
                                          converts or nulls mismatched values) a value does not match
                                          its column type (``int``/``long`` out of 32/64-bit range
                                          included), or a row matches a configured ``reject_when`` rule
401   ``AuthenticationFailed`` /          no bearer token / bad signature, expired, wrong issuer or
      ``InvalidAuthenticationToken`` /    a token for another resource (audience)
      ``InvalidAuthenticationTokenAudience``
403   ``OperationFailed``                 the token's app is not allowed on the DCR (models the
                                          *Monitoring Metrics Publisher* role assignment)
404   ``NotFound``                        unknown DCR immutable id
413   ``ContentLengthLimitExceeded``      body over ``limit`` bytes as sent, or once gunzipped
429   ``TooManyRequests`` + Retry-After   over ``requests_per_minute`` or ``bytes_per_minute`` per DCR
500   (empty body)                        an empty request body, as the real service answers
====  ==================================  =====================================================

A bare JSON object (not an array) is answered 204 and ingests nothing, like the service.
Scripted faults (:meth:`LogsIngestionApp.inject`) answer the next requests with a given status,
or store the rows and then stall past the client's timeout (a "lost 204").

Tokens are checked by the tenant emulator's ``TokenVerifier`` (signature against its JWKS,
expiry, audience ``https://monitor.azure.com``); the app id (``appid`` claim) must be one of
the DCR's ``allowed_apps``, which models the *Monitoring Metrics Publisher* role assignment.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import orjson

from emulators.httpd import App, Request, Response
from emulators.tenant.tokens import TokenError, bearer

_isal: Any
try:  # same format as zlib, faster (the emulator must not be the bottleneck of a benchmark)
    _isal = importlib.import_module("isal.isal_zlib")
except ImportError:  # pragma: no cover - platforms without isal wheels fall back to zlib
    _isal = None

API_VERSIONS = ("2023-01-01", "2021-11-01-preview")
LIMIT = 1_048_576
_GZIP_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error) + ((_isal.error,) if _isal else ())
MONITOR_AUDIENCE = "https://monitor.azure.com"

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "int": (int,),
    "long": (int,),
    "real": (int, float),
    "boolean": (bool,),
    "datetime": (str,),
    "guid": (str,),
}


#: Column types holding signed integers of this many bits (Kusto ``int`` and ``long``).
_INT_BITS = {"int": 32, "long": 64}
#: Column types holding numbers; none holds one beyond a 64-bit real (about 1.8e308).
_NUMBER_KINDS = ("int", "long", "real")

_NOT_JSON = "The request body is not valid JSON."


class Verifier(Protocol):
    """What the emulator needs of a token verifier (the tenant emulator's ``TokenVerifier``)."""

    def verify(self, token: str | None, audience: str) -> dict[str, Any]: ...


#: TokenError.reason -> the error code answered with HTTP 401.
_TOKEN_CODES = {"audience": "InvalidAuthenticationTokenAudience", "missing": "AuthenticationFailed"}


@dataclass
class Dcr:
    """One data collection rule: its streams (name -> {column: type}) and who may ingest."""

    immutable_id: str
    streams: dict[str, dict[str, str]]
    allowed_apps: set[str] | None = None  # appid/azp values holding the role; None = any valid token


@dataclass
class Fault:
    """A scripted answer for the next request: ``status`` (+ ``retry_after``), or ``stall`` seconds
    after storing the rows (the client times out although the rows were ingested)."""

    status: int = 0
    code: str = ""
    retry_after: float | None = None
    stall: float = 0.0


@dataclass
class Stats:
    requests: int = 0
    accepted_requests: int = 0
    rows: int = 0
    bytes_in: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    ignored_objects: int = 0  # bare-object bodies answered 204 and dropped


class LogsIngestionApp(App):
    """The emulated endpoint (a DCE, or a DCR's logsIngestion endpoint)."""

    auto_gunzip = False
    max_body = 16 * 1024 * 1024

    def __init__(
        self,
        verifier: Verifier,
        dcrs: list[Dcr],
        audience: str = MONITOR_AUDIENCE,
        limit: int = LIMIT,
        strict: bool = False,
        keep_rows: int = 100_000,
        requests_per_minute: int = 12_000,
        bytes_per_minute: int = 2 * 1024**3,
        sink: Callable[[str, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        super().__init__()
        self.verifier = verifier
        self.dcrs = {d.immutable_id: d for d in dcrs}
        self.audience = audience
        self.limit = limit
        self.strict = strict
        self.keep_rows = keep_rows
        self.requests_per_minute = requests_per_minute
        self.bytes_per_minute = bytes_per_minute
        self.sink = sink  # called with (stream, rows) for every accepted call (dry runs write files)
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.stats = Stats()
        self.reject_rows: list[Callable[[dict[str, Any]], str | None]] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._window: deque[tuple[float, int]] = deque()  # (time, bytes) of calls in the last minute
        self._window_bytes = 0
        self._verified: dict[str, dict[str, Any]] = {}
        self._number_columns: dict[tuple[str, str], _NumberColumns | None] = {}
        self.route("POST", r"/dataCollectionRules/(?P<dcr>[^/]+)/streams/(?P<stream>[^/]+)", self.upload)

    # ------------------------------------------------------------------ test controls

    def inject(self, *faults: Fault) -> None:
        """Answer the next ``len(faults)`` authorized requests with these faults, in order."""
        with self._lock:
            self._faults.extend(faults)

    def reject_when(self, column: str, value: Any, message: str = "") -> None:
        """Refuse (400 InvalidPayload) any call containing a row whose ``column`` equals ``value``."""

        def rule(row: dict[str, Any]) -> str | None:
            if row.get(column) == value:
                return message or f"column '{column}' holds a value the transformation cannot convert"
            return None

        self.reject_rows.append(rule)

    def all_rows(self, stream: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.rows.get(stream, []))

    # ------------------------------------------------------------------ the endpoint

    def upload(self, request: Request) -> Response:
        response = self._upload(request)
        with self._lock:
            self.stats.requests += 1
            self.stats.statuses[response.status] = self.stats.statuses.get(response.status, 0) + 1
        return response

    def _upload(self, request: Request) -> Response:
        assert request.match is not None
        dcr_id, stream = request.match.group("dcr"), request.match.group("stream")
        version = request.query.get("api-version")
        if not version:
            return _error(400, "MissingApiVersion", "The api-version query parameter (?api-version=) is required.")
        if version not in API_VERSIONS:
            return _error(
                400,
                "UnsupportedApiVersion",
                f"The HTTP resource does not support the api-version '{version}'; "
                f"use one of {', '.join(API_VERSIONS)}.",
            )
        auth = request.header("authorization")
        if not auth.lower().startswith("bearer "):
            return _error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        try:
            claims = self._claims(bearer(auth))
        except TokenError as exc:
            return _error(401, _TOKEN_CODES.get(exc.reason, "InvalidAuthenticationToken"), exc.message)
        dcr = self.dcrs.get(dcr_id)
        if dcr is None:
            return _error(404, "NotFound", f"Data collection rule with immutable Id '{dcr_id}' not found.")
        app_id = str(claims.get("appid") or claims.get("azp") or "")
        if dcr.allowed_apps is not None and app_id not in dcr.allowed_apps:
            return _error(
                403,
                "OperationFailed",
                "The authentication token provided does not have access to ingest data for the data collection "
                f"rule with immutable Id '{dcr_id}'.",
            )
        columns = dcr.streams.get(stream)
        if columns is None:
            message = f"Stream '{stream}' is not declared in data collection rule '{dcr_id}'."
            return _error(400, "InvalidStream", message)
        if request.header("content-type").split(";")[0].strip().lower() != "application/json":
            return _error(400, "InvalidContentType", "Content-Type must be application/json.")
        body = request.body
        if len(body) > self.limit:
            return _too_large(self.limit, len(body))
        encoding = request.header("content-encoding").strip().lower()
        if encoding == "gzip":
            try:
                body = _gunzip(body, self.limit)
            except ValueError:
                return _too_large(self.limit, self.limit + 1)
            except _GZIP_ERRORS:
                return _error(400, "InvalidPayload", "The request body is not valid gzip data.")
        elif encoding not in ("", "identity"):
            return _error(400, "UnsupportedContentEncoding", f"Content-Encoding '{encoding}' is not supported.")
        if not body:
            return Response(500, b"")
        throttled = self._throttle(len(body))
        if throttled is not None:
            return throttled
        fault = self._next_fault()
        if fault is not None and fault.status:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return _error(fault.status, fault.code or _DEFAULT_CODES.get(fault.status, "Error"), "injected", headers)
        numbers = self._numbers(dcr_id, stream, columns)
        if not self._storing(stream):
            counted = _count_objects(body, numbers)
            if isinstance(counted, Response):
                return counted
            if counted >= 0:
                with self._lock:
                    self.stats.accepted_requests += 1
                    self.stats.rows += counted
                    self.stats.bytes_in += len(request.body)
                if fault is not None and fault.stall:
                    time.sleep(fault.stall)
                return Response.empty(204)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            # orjson also refuses a number beyond a real anywhere: judge as the other path does
            judged = _count_objects(body, numbers)
            if isinstance(judged, Response):
                return judged
            try:  # such a number outside the numeric columns (dynamic, undeclared): infinite
                data = _INFINITE_FLOATS.decode(body)
            except msgspec.MsgspecError:
                return _error(400, "InvalidPayload", _NOT_JSON)
        if isinstance(data, dict):
            with self._lock:
                self.stats.ignored_objects += 1
            return Response.empty(204)
        if not isinstance(data, list):
            return _error(400, "InvalidPayload", "The request body must be a JSON array of objects.")
        problem, undeclared = self._validate(data, columns)
        if problem:
            return _error(400, "InvalidPayload", problem)
        rows = [{k: v for k, v in row.items() if k in columns} for row in data] if undeclared else data
        with self._lock:
            kept = self.rows.setdefault(stream, [])
            room = self.keep_rows - len(kept)
            if room > 0:
                kept.extend(rows[:room])
            self.stats.accepted_requests += 1
            self.stats.rows += len(rows)
            self.stats.bytes_in += len(request.body)
        if self.sink is not None:
            self.sink(stream, rows)
        if fault is not None and fault.stall:
            time.sleep(fault.stall)
        return Response.empty(204)

    def _numbers(self, dcr_id: str, stream: str, columns: dict[str, str]) -> _NumberColumns | None:
        """The reader of the stream's ``int``/``long``/``real`` columns (None: it declares none)."""
        key = (dcr_id, stream)
        if key not in self._number_columns:
            names = [name for name, kind in columns.items() if kind in _NUMBER_KINDS]
            self._number_columns[key] = _NumberColumns(names) if names else None
        return self._number_columns[key]

    def _storing(self, stream: str) -> bool:
        """Whether an accepted call's rows are needed: kept for inspection, handed to ``sink``,
        or checked value by value (``strict``, ``reject_when``). When not, the body is only
        validated (:func:`_count_objects`)."""
        if self.strict or self.reject_rows or self.sink is not None:
            return True
        with self._lock:
            return len(self.rows.get(stream, ())) < self.keep_rows

    def _claims(self, token: str | None) -> dict[str, Any]:
        """Verified claims of ``token``; a token seen before is re-checked only for expiry."""
        cached = self._verified.get(token or "")
        now = getattr(self.verifier, "now", time.time)  # the tenant emulator's (emulated) clock
        if cached is not None and float(cached.get("exp", 0)) > now():
            return cached
        claims = self.verifier.verify(token, self.audience)
        with self._lock:
            if len(self._verified) >= 64:
                self._verified.clear()
            self._verified[token or ""] = claims
        return claims

    def _validate(self, data: list[Any], columns: dict[str, str]) -> tuple[str, bool]:
        """(problem or "", whether any row has columns the stream does not declare)."""
        undeclared = False
        keys = columns.keys()
        for index, row in enumerate(data):
            if not isinstance(row, dict):
                return f"Element {index} of the array is not a JSON object.", undeclared
            if not undeclared and not row.keys() <= keys:
                undeclared = True
            for rule in self.reject_rows:
                why = rule(row)
                if why:
                    return f"Element {index}: {why}.", undeclared
            if not self.strict:
                continue
            for name, value in row.items():
                kind = columns.get(name)
                if kind is None or kind == "dynamic" or value is None:
                    continue
                allowed = _PY_TYPES.get(kind)
                if allowed and (not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)):
                    return f"Element {index}: column '{name}' expects {kind}.", undeclared
                bits = _INT_BITS.get(kind)
                if bits and not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
                    return f"Element {index}: column '{name}' holds a value out of the range of {kind}.", undeclared
        return "", undeclared

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _throttle(self, size: int) -> Response | None:
        now = time.monotonic()
        with self._lock:
            while self._window and self._window[0][0] < now - 60:
                self._window_bytes -= self._window.popleft()[1]
            if len(self._window) >= self.requests_per_minute or self._window_bytes + size > self.bytes_per_minute:
                wait = max(1, int(self._window[0][0] + 60 - now) + 1) if self._window else 1
                return _error(
                    429,
                    "TooManyRequests",
                    "Rate limit exceeded for the data collection rule; retry after the indicated time.",
                    {"Retry-After": str(wait)},
                )
            self._window.append((now, size))
            self._window_bytes += size
        return None


_DEFAULT_CODES = {
    400: "InvalidPayload",
    401: "InvalidAuthenticationToken",
    403: "OperationFailed",
    413: "ContentLengthLimitExceeded",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response.json({"error": {"code": code, "message": message}}, status, headers)


def _too_large(limit: int, size: int) -> Response:
    return _error(
        413,
        "ContentLengthLimitExceeded",
        f"Maximum allowed content length: {limit} bytes ({limit // 1_048_576 or 1} MB). "
        f"Provided content length: {size} bytes.",
    )


_RAW_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])
_RAW_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _count_objects(body: bytes, numbers: _NumberColumns | None) -> int | Response:
    """Validate a body whose rows will not be stored: the number of objects in its JSON array,
    the 400 answer for malformed JSON, a non-object element or a number out of range in a
    ``numbers`` column, or -1 when it is not an array (the full path answers that: a bare object
    is accepted and ignored).

    msgspec checks every element is well-formed JSON without building it (about half the CPU
    of ``orjson.loads``); the UTF-8 check keeps refusing what ``orjson`` refused. An ASCII body
    needs no UTF-8 check: it is judged in one pass that reads only the numeric columns."""
    if numbers is not None and body.isascii():
        counted = numbers.count(body)
        if counted is not None:
            return counted
    try:
        items = _RAW_ITEMS.decode(body)
    except msgspec.ValidationError:
        return -1
    except msgspec.DecodeError:
        return _error(400, "InvalidPayload", _NOT_JSON)
    for index, item in enumerate(items):
        row = bytes(item)
        if not row.isascii():  # row by row: one non-ASCII row would make decoding the whole body slow
            try:
                row.decode("utf-8")
            except UnicodeDecodeError:
                return _error(400, "InvalidPayload", _NOT_JSON)
        if row[0] != 0x7B:  # "{"
            return _error(400, "InvalidPayload", f"Element {index} of the array is not a JSON object.")
    problem = numbers.out_of_range(items) if numbers is not None else ""
    return _error(400, "InvalidPayload", problem) if problem else len(items)


#: Reads JSON as orjson does, except that a float literal beyond a real is infinite, not refused.
_INFINITE_FLOATS = msgspec.json.Decoder(float_hook=float)


class _NumberColumns:
    """Finds a number beyond a 64-bit real (``1e400``, 400 digits) in a stream's numeric columns
    without building the other columns: msgspec reads only these (as any JSON type, so that the
    non-strict answer to a mismatched type stays 204) and refuses a float literal out of range."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        row = msgspec.defstruct("NumberColumns", [(name, Any, None) for name in names])
        self._rows = msgspec.json.Decoder(list[row])  # type: ignore[valid-type]
        self._row = msgspec.json.Decoder(row)

    def count(self, body: bytes) -> int | Response | None:
        """The number of objects in the body's array or the 400 answer; None when the body needs
        :func:`_count_objects`'s row-by-row look (not an array of objects, a float out of range)."""
        try:
            rows = self._rows.decode(body)
        except msgspec.ValidationError:
            return None
        except msgspec.DecodeError:
            return _error(400, "InvalidPayload", _NOT_JSON)
        for index, row in enumerate(rows):
            name = self._huge_integer(row)
            if name:
                return _error(400, "InvalidPayload", _beyond_a_real(index, name))
        return len(rows)

    def out_of_range(self, items: list[msgspec.Raw]) -> str:
        """The problem with the first of these rows (JSON objects) holding such a number, or ""."""
        for index, item in enumerate(items):
            try:
                name = self._huge_integer(self._row.decode(item))
            except msgspec.ValidationError:  # a float literal out of range: in which column?
                name = next(n for n, v in _RAW_FIELDS.decode(item).items() if n in self.names and _refused(v))
            if name:
                return _beyond_a_real(index, name)
        return ""

    def _huge_integer(self, row: Any) -> str:
        """The first column holding an integer literal beyond a real (msgspec builds it as an int;
        orjson, on the storing path, refuses it as infinite), or ""."""
        for name in self.names:
            value = getattr(row, name)
            if type(value) is int and not -_MAX_INTEGER <= value <= _MAX_INTEGER:
                return name
        return ""


#: Integer literals beyond this become infinite as reals (orjson refuses them).
_MAX_INTEGER = int(sys.float_info.max)


def _refused(raw: msgspec.Raw) -> bool:
    try:
        msgspec.json.decode(raw)
    except msgspec.ValidationError:
        return True
    return False


def _beyond_a_real(index: int, name: str) -> str:
    return f"Element {index}: column '{name}' holds a number beyond the range of a 64-bit real."


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decompress, refusing (ValueError) more than ``limit`` bytes of output (gzip bombs included)."""
    d: Any = (_isal or zlib).decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(body, limit + 1)
    if len(out) > limit:
        raise ValueError("too large")
    if not d.eof:
        raise EOFError("truncated gzip")
    return bytes(out)
