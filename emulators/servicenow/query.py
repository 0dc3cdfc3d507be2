"""ServiceNow encoded queries (``sysparm_query``) as the emulator understands them.

Supported: conditions joined by ``^`` (AND) and ``^OR`` (OR with the previous condition),
``^NQ`` (a new OR'ed block), operators ``=``, ``!=``, ``>``, ``>=``, ``<``, ``<=``, ``IN``,
``NOT IN``, ``STARTSWITH``, ``ENDSWITH``, ``LIKE``, ``NOT LIKE``, ``ISEMPTY``, ``ISNOTEMPTY``,
and ``ORDERBY<field>`` / ``ORDERBYDESC<field>``. As on a real instance, a part that cannot be
parsed is silently ignored (``glide.invalid_query.returns_no_rows`` is off by default), and
column names, operators and values are case-sensitive.

Values compare as numbers when both sides are numbers, otherwise as strings; date-times are
stored as ``YYYY-MM-DD HH:MM:SS`` (UTC), which order correctly as strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_CONDITION = re.compile(
    r"^(?P<field>[a-z0-9_.]+)"
    r"(?P<op>!=|>=|<=|=|>|<|NOT IN|IN|STARTSWITH|ENDSWITH|NOT LIKE|LIKE|ISNOTEMPTY|ISEMPTY)"
    r"(?P<value>.*)$",
    re.DOTALL,
)

Predicate = Callable[[dict[str, Any]], bool]


@dataclass
class Query:
    """A parsed query: OR'ed blocks of AND'ed groups of OR'ed conditions, plus the sort order."""

    blocks: list[list[list[Predicate]]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    ignored: list[str] = field(default_factory=list)

    def matches(self, record: dict[str, Any]) -> bool:
        if not self.blocks:
            return True
        return any(all(any(p(record) for p in group) for group in block) for block in self.blocks)

    def sort(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        result = list(records)
        for name, descending in reversed(self.order):
            result.sort(key=_key_of(name), reverse=descending)
        return result


def parse(text: str, columns: set[str] | None = None) -> Query:
    """Parse ``sysparm_query``; unknown parts land in ``Query.ignored``. With ``columns``, a
    condition or sort on a column not in it is ignored too (as an instance does)."""
    query = Query()
    if not text:
        return query
    for block_text in text.split("^NQ"):
        block: list[list[Predicate]] = []
        for part in block_text.split("^"):
            if not part:
                continue
            if part.startswith("ORDERBY"):
                descending = part.startswith("ORDERBYDESC")
                name = part[len("ORDERBYDESC") :] if descending else part[len("ORDERBY") :]
                if columns is None or name in columns:
                    query.order.append((name, descending))
                else:
                    query.ignored.append(part)
                continue
            is_or = part.startswith("OR") and bool(block) and _CONDITION.match(part[2:]) is not None
            predicate = _condition(part[2:] if is_or else part, columns)
            if predicate is None:
                query.ignored.append(part)
                continue
            if is_or:
                block[-1].append(predicate)
            else:
                block.append([predicate])
        if block:
            query.blocks.append(block)
    return query


def _condition(text: str, columns: set[str] | None = None) -> Predicate | None:
    m = _CONDITION.match(text)
    if m is None or (columns is not None and m.group("field").split(".")[0] not in columns):
        return None
    name, op, value = m.group("field"), m.group("op"), m.group("value")

    def test(record: dict[str, Any]) -> bool:
        return _compare(_value(record, name), op, value)

    return test


def _key_of(name: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    def key(record: dict[str, Any]) -> tuple[int, Any]:
        return _sort_key(_value(record, name))

    return key


def equals(name: str, value: str) -> Predicate:
    """A predicate ``name=value`` (for the ``name=value`` URL parameter form)."""
    return lambda record: _value(record, name) == value


def _value(record: dict[str, Any], name: str) -> str:
    value = record.get(name, "")
    if isinstance(value, dict):  # reference field {"link", "value"}
        value = value.get("value", "")
    return "" if value is None else str(value)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _ordered(left: str, right: str) -> tuple[Any, Any]:
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return a, b
    return left, right


def _compare(actual: str, op: str, value: str) -> bool:
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    if op in (">", ">=", "<", "<="):
        if actual == "":
            return False
        a, b = _ordered(actual, value)
        return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]
    if op == "IN":
        return actual in value.split(",")
    if op == "NOT IN":
        return actual not in value.split(",")
    if op == "STARTSWITH":
        return actual.startswith(value)
    if op == "ENDSWITH":
        return actual.endswith(value)
    if op == "LIKE":
        return value in actual
    if op == "NOT LIKE":
        return value not in actual
    if op == "ISEMPTY":
        return actual == ""
    if op == "ISNOTEMPTY":
        return actual != ""
    return False


def _sort_key(value: str) -> tuple[int, Any]:
    number = _number(value)
    return (0, number) if number is not None else (1, value)
