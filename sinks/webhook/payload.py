"""The webhook payload: the event in the common schema (``docs/schema.md``), optionally reduced to
selected fields and with keys renamed.

* No ``fields``: the whole event as the schema serializes it, without ``raw`` (unless the host
  carries it for this sink: ``carry_raw = true``) and without
  ``sensitive_types[].detected_values`` (unless ``include_detected_values``).
* ``fields``: a flat object with one key per selected path. A path is dotted (``user.upn``,
  ``links.incident``, ``enrichment.department``); ``[]`` maps over a list
  (``policies[].rules[].name`` is the list of every rule name). ``rename`` maps a path to the
  key used in the payload; otherwise the key is the path itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from forwarder.schema import DlpEvent, schema_fields

_ROOTS = {name.split(".")[0].split("[")[0] for name in schema_fields(DlpEvent)} | {"raw"}


def check_fields(fields: Sequence[str], rename: Mapping[str, str], include_values: bool, path: str) -> list[str]:
    """Problems with a field selection, each as ``"<path>.<key>: <problem>"``."""
    problems: list[str] = []
    for i, name in enumerate(fields):
        root = name.split(".")[0].split("[")[0]
        if root not in _ROOTS:
            problems.append(f"{path}.fields[{i}]: {name!r} is not an event field (see docs/schema.md)")
        elif "detected_values" in name and not include_values:
            problems.append(f"{path}.fields[{i}]: {name!r} needs include_detected_values = true")
    for name in rename:
        if fields and name not in fields:
            problems.append(f"{path}.rename.{name}: not one of the selected fields")
    keys = [rename.get(f, f) for f in fields]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        problems.append(f"{path}.rename: two fields would share the key(s) {', '.join(duplicates)}")
    return problems


def build_payload(
    data: dict[str, Any], fields: Sequence[str], rename: Mapping[str, str], include_values: bool
) -> dict[str, Any]:
    """The JSON object sent for one event (``data`` as the spool holds it)."""
    if not fields:
        payload = {rename.get(k, k): v for k, v in data.items()}
        if not include_values:
            key = rename.get("sensitive_types", "sensitive_types")
            payload[key] = [_without_values(s) for s in data.get("sensitive_types") or []]
        return payload
    result: dict[str, Any] = {}
    for name in fields:
        value = _select(data, name)
        if not include_values and name.split(".")[0].split("[")[0] == "sensitive_types":
            value = _scrub(value)
        result[rename.get(name, name)] = value
    return result


def _without_values(item: Any) -> Any:
    if isinstance(item, dict):
        return {k: v for k, v in item.items() if k != "detected_values"}
    return item


def _scrub(value: Any) -> Any:
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return _without_values(value)


def _select(data: Any, path: str) -> Any:
    """Walk a dotted path; a ``[]`` suffix maps the rest of the path over a list."""
    head, dot, rest = path.partition(".")
    if head.endswith("[]"):
        items = data.get(head[:-2]) if isinstance(data, dict) else None
        if not isinstance(items, list):
            return []
        if not dot:
            return items
        values = [_select(item, rest) for item in items]
        if "[]" in rest:  # flatten nested lists: policies[].rules[].name
            return [v for sub in values for v in (sub if isinstance(sub, list) else [sub])]
        return values
    value = data.get(head) if isinstance(data, dict) else None
    if not dot:
        return value
    return _select(value, rest) if value is not None else None
