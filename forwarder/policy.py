"""The sensitive-value policy: what happens to matched sensitive values before any sink sees an event.

DLP records read with ``ActivityFeed.ReadDlp`` carry the values a rule matched (credit card
numbers, national ids...) in ``SensitiveInformationDetections.DetectedValues``. The host calls
:meth:`SensitiveValuePolicy.apply` on every normalized event, before spooling, so no sink,
spool file, dead letter or log line holds a raw value. There is deliberately no "keep" mode.
Modes (``[policy] sensitive_values``):

``drop`` (default)
    Matched values are removed: ``sensitive_types[].detected_values`` becomes empty and every
    ``DetectedValues`` list inside ``raw`` becomes ``[]``.
``mask``
    Each value keeps its last 4 characters when it is at least 8 long (``****1111``), else
    becomes ``****``; names are kept.
``hash``
    Each value becomes ``hmac-sha256:<hex>`` keyed with ``hash_key``: equal values stay
    correlatable across events without being readable.

In ``raw``, the policy looks, at any depth and case-insensitively, for the keys in
:data:`VALUE_LIST_KEYS` (lists of ``{"Name", "Value", "Context"}`` objects or of strings) and
:data:`VALUE_KEYS` (single values); ``Context`` snippets around a match are always dropped,
since they contain the value itself. A string that embeds a JSON document mentioning detected
values (``AuditData`` as text) is parsed, scrubbed and re-serialized; if it is not JSON it is
replaced by :data:`REMOVED`.

Speed (this runs on every event): the places where DLP records keep their detections
(:func:`_detection_lists`: ``PolicyDetails[].Rules[].ConditionsMatched.SensitiveInformation[]
.SensitiveInformationDetections`` and the Endpoint ``SensitiveInfoTypeData``) are set aside,
and the rest of the record is serialized once and searched, lower-cased, for the byte strings
in :data:`_MARKERS` (every key or text the walk acts on contains one). When the rest holds
none, only the set-aside places are walked, at the depth the full walk reaches them; else the
whole record is walked. Either way the result is the full walk's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import orjson

from forwarder.config import PolicySettings
from forwarder.schema import DlpEvent

#: Keys (lower-cased) whose value is a list of matched values, in any raw record.
VALUE_LIST_KEYS = frozenset({"detectedvalues", "matchedvalues", "detected_values", "matched_values"})
#: Keys (lower-cased) whose value is one matched value.
VALUE_KEYS = frozenset({"detectedvalue", "matchedvalue", "detected_value", "matched_value"})
#: Keys (lower-cased) of text around a match; always removed.
CONTEXT_KEYS = frozenset({"context", "matchcontext", "evidencesnippet"})

MASK = "****"
#: What replaces text that mentions matched values but cannot be parsed to scrub them.
REMOVED = "[removed by dlpfwd: text containing matched sensitive values]"
_MARKER = re.compile(r"(?i)(detected|matched)_?values?\b")
#: Lower-case byte strings, one of which every key or text the walk changes contains once
#: serialized: the keys of :data:`VALUE_LIST_KEYS`, :data:`VALUE_KEYS` and :data:`CONTEXT_KEYS`,
#: and the text :data:`_MARKER` matches (its ASCII letters; JSON escapes only quotes,
#: backslashes and control characters, none of which the marker can span).
_MARKERS = (b"detectedvalue", b"detected_value", b"matchedvalue", b"matched_value", b"context", b"evidencesnippet")
#: Depth of ``PolicyDetails[].Rules[].ConditionsMatched.SensitiveInformation[].SensitiveInformationDetections``
#: in the full walk.
_DETECTIONS_DEPTH = 8
#: Depth of the ``SensitiveInfoTypeData`` list (Endpoint records) in the full walk.
_ENDPOINT_LIST_DEPTH = 1
#: What the walk does with a key: nothing, a value list, a single value, a context snippet.
_PLAIN, _VALUE_LIST, _VALUE, _CONTEXT = 0, 1, 2, 3
#: Key -> action cache (keys come from a small vocabulary); bounded.
_KEY_ACTIONS: dict[Any, int] = {}
_KEY_ACTIONS_MAX = 8192


class SensitiveValuePolicy:
    """Applies :class:`~forwarder.config.PolicySettings` to events, in place."""

    def __init__(self, settings: PolicySettings | None = None) -> None:
        self.settings = settings or PolicySettings()
        self.mode = self.settings.sensitive_values
        if self.mode not in ("drop", "mask", "hash"):
            raise ValueError(f"sensitive_values: expected drop, mask or hash, got {self.mode!r}")
        key = self.settings.hash_key.reveal() if self.settings.hash_key else ""
        if self.mode == "hash" and not key:
            raise ValueError("sensitive_values = 'hash' needs hash_key")
        self._key = key.encode("utf-8")

    # ------------------------------------------------------------------ public

    def apply(self, event: DlpEvent) -> None:
        """Scrub ``event.sensitive_types[].detected_values`` and every matched value in ``event.raw``."""
        for sit in event.sensitive_types:
            if self.mode == "drop":
                sit.detected_values = []
            else:
                for dv in sit.detected_values:
                    dv.value = self.transform(dv.value)
        if event.raw is not None:
            self._scrub_record(event.raw)

    def scrub(self, record: Any) -> Any:
        """Scrub matched values in any raw record (a dict or list, in place) and return it; for
        records that never become events, e.g. ones quarantined by a failing normalizer."""
        self._scrub_record(record)
        return record

    def transform(self, value: Any) -> str:
        """The masked or hashed form of one value (``drop`` mode returns ``""``)."""
        text = value if isinstance(value, str) else str(value)
        if self.mode == "mask":
            return MASK + text[-4:] if len(text) >= 8 else MASK
        if self.mode == "hash":
            return "hmac-sha256:" + hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()
        return ""

    # ------------------------------------------------------------------ raw records

    def _scrub_record(self, record: Any) -> None:
        """The full walk's result, walking only where markers can be (see the module docstring)."""
        if type(record) is not dict:
            self._scrub(record, 0)
            return
        places = _detection_lists(record)
        if not places:  # nothing set aside: the record is the rest
            try:
                rest = orjson.dumps(record).lower()
            except orjson.JSONEncodeError:
                rest = b"detectedvalue"
            if _has_marker(rest):
                self._scrub(record, 0)
            return
        saved = [(container, key, container[key]) for container, key, _ in places]
        try:
            for container, key, _ in places:
                container[key] = None
            rest = orjson.dumps(record).lower()
        except orjson.JSONEncodeError:  # e.g. nested too deep to serialize: walk everything
            rest = b"detectedvalue"
        finally:
            for container, key, value in reversed(saved):
                container[key] = value
        if _has_marker(rest):
            self._scrub(record, 0)
            return
        drop = self.mode == "drop"
        for (_, _, value), (_, _, depth) in zip(saved, places, strict=True):
            if drop and type(value) is dict and _plain_detections(value):
                value["DetectedValues"] = []  # all the walk would change
            elif isinstance(value, dict | list):
                self._scrub(value, depth)

    def _scrub(self, node: Any, depth: int) -> None:
        if depth > 64:  # hostile nesting: give up descending, never crash
            return
        if isinstance(node, dict):
            actions = _KEY_ACTIONS
            for key in list(node):
                action = actions.get(key)
                if action is None:
                    action = _key_action(key)
                value = node[key]
                if action == _VALUE_LIST:
                    node[key] = self._values(value)
                elif action == _VALUE:
                    if self.mode == "drop":
                        del node[key]
                    else:
                        node[key] = self.transform(value) if value not in (None, "") else value
                elif action == _CONTEXT and depth > 0 and _inside_detection(node):
                    del node[key]
                elif isinstance(value, str):
                    if _MARKER.search(value):
                        node[key] = self._scrub_embedded(value, depth)
                elif isinstance(value, dict | list):
                    self._scrub(value, depth + 1)
        elif isinstance(node, list):
            for item in node:
                if isinstance(item, dict | list):
                    self._scrub(item, depth + 1)

    def _scrub_embedded(self, text: str, depth: int) -> str:
        """A JSON document inside a string (``AuditData`` of some exports): scrubbed and
        re-serialized; text that mentions detected values but is not JSON is removed."""
        try:
            inner = orjson.loads(text)
        except orjson.JSONDecodeError:
            return REMOVED
        if not isinstance(inner, dict | list):
            return REMOVED
        self._scrub(inner, depth + 1)
        return orjson.dumps(inner).decode()

    def _values(self, values: Any) -> Any:
        if self.mode == "drop":
            return []
        if not isinstance(values, list):
            return self.transform(values) if values not in (None, "") else values
        result: list[Any] = []
        for item in values:
            if isinstance(item, dict):
                kept: dict[str, Any] = {}
                for k, v in item.items():
                    lk = k.lower() if isinstance(k, str) else ""
                    if lk in CONTEXT_KEYS:
                        continue
                    kept[k] = self.transform(v) if lk == "value" and v not in (None, "") else v
                result.append(kept)
            elif item is None:
                result.append(item)
            else:
                result.append(self.transform(item))
        return result


#: What comes right before ``value`` in the markers that end with it (see :func:`_has_marker`).
_VALUE_MARKER_HEADS = (b"detected", b"detected_", b"matched", b"matched_")


def _has_marker(text: bytes) -> bool:
    """Whether lower-cased ``text`` holds one of :data:`_MARKERS`. Four of them end with
    ``value``: each ``value`` in the text (a few per record) is checked for one of their heads,
    so the text is scanned three times instead of six (~2.5 us less per 2 KB record)."""
    if b"context" in text or b"evidencesnippet" in text:
        return True
    find = text.find
    at = find(b"value")
    while at >= 0:
        if text.endswith(_VALUE_MARKER_HEADS, 0, at):
            return True
        at = find(b"value", at + 5)
    return False


def _key_action(key: Any) -> int:
    """What the walk does with ``key`` (cached in :data:`_KEY_ACTIONS`)."""
    lowered = key.lower() if isinstance(key, str) else ""
    if lowered in VALUE_LIST_KEYS:
        action = _VALUE_LIST
    elif lowered in VALUE_KEYS:
        action = _VALUE
    elif lowered in CONTEXT_KEYS:
        action = _CONTEXT
    else:
        action = _PLAIN
    if type(key) is str and len(_KEY_ACTIONS) < _KEY_ACTIONS_MAX:
        _KEY_ACTIONS[key] = action
    return action


def _detection_lists(record: dict[str, Any]) -> list[tuple[dict[str, Any], str, int]]:
    """Where DLP records keep their detections, as (object, key, depth of the value in the full
    walk): ``PolicyDetails[].Rules[].ConditionsMatched.SensitiveInformation[].SensitiveInformationDetections`` and
    ``SensitiveInfoTypeData``, when they hold a list or an object (text is searched with the
    rest, as the full walk would treat it). Exact key spellings only: markers under any other spelling stay
    in the rest of the record, which is then walked whole."""
    found: list[tuple[dict[str, Any], str, int]] = []
    policies = record.get("PolicyDetails")
    if type(policies) is list:
        for policy in policies:
            rules = policy.get("Rules") if type(policy) is dict else None
            if type(rules) is not list:
                continue
            for rule in rules:
                matched = rule.get("ConditionsMatched") if type(rule) is dict else None
                sits = matched.get("SensitiveInformation") if type(matched) is dict else None
                if type(sits) is not list:
                    continue
                for sit in sits:
                    if type(sit) is dict and type(sit.get("SensitiveInformationDetections")) in (dict, list):
                        found.append((sit, "SensitiveInformationDetections", _DETECTIONS_DEPTH))
    if type(record.get("SensitiveInfoTypeData")) in (list, dict):
        found.append((record, "SensitiveInfoTypeData", _ENDPOINT_LIST_DEPTH))
    return found


def _plain_detections(value: dict[str, Any]) -> bool:
    """``value`` is ``{"DetectedValues": [...], "ResultsTruncated": bool}`` as DLP records send it,
    which the walk in drop mode only changes by emptying the list."""
    return len(value) == 2 and type(value.get("DetectedValues")) is list and type(value.get("ResultsTruncated")) is bool


def _inside_detection(node: dict[str, Any]) -> bool:
    """A ``Context`` key is a match snippet when it sits beside a ``Value`` (a detected-value object)."""
    return any(isinstance(k, str) and k.lower() in ("value", "name") for k in node)
