"""The event as one line of JSON in a syslog message.

The payload is the common schema as ``forwarder.schema.to_json`` writes it (orjson: compact,
UTF-8, control characters and line breaks escaped, so the line never breaks newline framing),
without ``raw`` unless the sink carries it. Over the size limit, the longest strings are cut
(before serialization, so JSON escaping and UTF-8 stay intact) and end with the marker; the
keys ``id``, ``idempotency_key``, ``kind``, times and ``schema_version`` are never cut.
"""

from __future__ import annotations

from typing import Any

import orjson

from sinks.syslog.cef import FormatError
from sinks.syslog.truncate import shrink_to_fit

_KEEP = frozenset({"id", "idempotency_key", "kind", "event_time", "updated_time", "ingest_time", "schema_version"})


def _json_escape(value: str) -> str:
    return orjson.dumps(value).decode()[1:-1]


def _leaves(node: Any, path: tuple[Any, ...], out: list[tuple[Any, Any, str]], top: bool) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, str):
                if not (top and k in _KEEP):
                    out.append((node, k, v))
            elif isinstance(v, dict | list):
                _leaves(v, (*path, k), out, False)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, str):
                out.append((node, i, v))
            elif isinstance(v, dict | list):
                _leaves(v, (*path, i), out, False)


def format_json(data: dict[str, Any], budget: int, carry_raw: bool = False) -> str:
    """The event as compact JSON, at most ``budget`` UTF-8 bytes (else :class:`FormatError`)."""
    if not carry_raw and data.get("raw") is not None:
        data = {k: v for k, v in data.items() if k != "raw"}
    text = orjson.dumps(data).decode()
    size = len(text.encode())
    if size <= budget:
        return text
    # Work on a copy; the entry's dict is shared with other formatters of the batch.
    data = orjson.loads(text)
    leaves: list[tuple[Any, Any, str]] = []
    _leaves(data, (), leaves, True)
    values = [v for _, _, v in leaves]
    if not shrink_to_fit(values, [True] * len(values), size - budget, _json_escape):
        raise FormatError(f"a JSON event cannot fit in {budget} bytes even with every string cut")
    for (container, key, _), value in zip(leaves, values, strict=True):
        container[key] = value
    text = orjson.dumps(data).decode()
    if len(text.encode()) > budget:
        raise FormatError(f"a JSON event cannot fit in {budget} bytes")
    return text
