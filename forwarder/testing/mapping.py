"""Check a mapping table in the docs against the mapping a formatter exports.

A sink that formats events for another schema (CIM, CEF, LEEF, a Sentinel table, OCSF)
exports ``MAPPING: dict[target_field, schema_field | tuple[schema_field, ...]]`` and documents
it in ``docs/schema.md`` under a heading, as a markdown table whose first column is the
target field and whose second column lists the dlpfwd field(s), comma separated, in
backticks. Rows whose second column starts with ``(constant)`` document fixed values and are
compared with ``constants`` when given. Use::

    from forwarder.testing import check_mapping_table
    from sinks.syslog.cef import MAPPING

    def test_cef_mapping_is_documented():
        check_mapping_table("docs/schema.md", "CEF", MAPPING)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from forwarder.schema import schema_fields

CONSTANT = "(constant)"


def markdown_table(markdown_path: str | Path, heading: str) -> list[list[str]]:
    """Rows (cells stripped, header and separator removed) of the first table under ``heading``.

    ``heading`` is matched against ``#``-headings of any level, case-sensitively, exactly.
    The table must come before the next heading of the same or a higher level.
    """
    lines = Path(markdown_path).read_text(encoding="utf-8").splitlines()
    level = 0
    start = None
    for i, line in enumerate(lines):
        m = re.match(r"^(#+)\s+(.*?)\s*#*\s*$", line)
        if m and m.group(2) == heading:
            level, start = len(m.group(1)), i + 1
            break
    if start is None:
        raise AssertionError(f"{markdown_path}: no heading {heading!r}")
    rows: list[list[str]] = []
    in_table = False
    for line in lines[start:]:
        m = re.match(r"^(#+)\s", line)
        if m and len(m.group(1)) <= level:
            break
        if line.strip().startswith("|"):
            in_table = True
            cells = [c.strip() for c in _split_row(line.strip())]
            if all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                continue
            rows.append(cells)
        elif in_table:
            break
    if not rows:
        raise AssertionError(f"{markdown_path}: no table under heading {heading!r}")
    return rows[1:]  # drop the header row


def _split_row(line: str) -> list[str]:
    # Split on unescaped pipes outside backticks.
    cells, cell, in_code, escaped = [], "", False, False
    for ch in line.strip("|"):
        if escaped:
            cell += ch
            escaped = False
        elif ch == "\\":
            escaped = True
            cell += ch
        elif ch == "`":
            in_code = not in_code
            cell += ch
        elif ch == "|" and not in_code:
            cells.append(cell)
            cell = ""
        else:
            cell += ch
    cells.append(cell)
    return cells


def _unquote(cell: str) -> str:
    return cell.strip().strip("`").strip()


def documented_mapping(markdown_path: str | Path, heading: str) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """(target -> schema fields, constant targets) as documented under ``heading``."""
    mapping: dict[str, tuple[str, ...]] = {}
    constants: set[str] = set()
    for row in markdown_table(markdown_path, heading):
        if len(row) < 2 or not row[0]:
            continue
        target = _unquote(row[0])
        source = row[1].strip()
        if source.startswith(CONSTANT):
            constants.add(target)
            continue
        fields = tuple(_unquote(f) for f in re.findall(r"`([^`]+)`", source)) or tuple(
            _unquote(f) for f in source.split(",") if _unquote(f)
        )
        if target in mapping:
            mapping[target] = mapping[target] + fields
        else:
            mapping[target] = fields
    return mapping, constants


def is_schema_field(name: str, fields: Iterable[str] | None = None) -> bool:
    """True for a leaf of :func:`forwarder.schema.schema_fields`, or a key below a free-form
    object field (``enrichment.x``, ``raw.Id``)."""
    known = set(fields if fields is not None else schema_fields())
    if name in known:
        return True
    return any(name.startswith(f + ".") for f in ("enrichment", "raw") if f in known)


def check_mapping_table(
    markdown_path: str | Path,
    heading: str,
    mapping: Mapping[str, str | tuple[str, ...] | list[str]],
    constants: Iterable[str] | None = None,
    fields: Iterable[str] | None = None,
) -> None:
    """Assert that the table under ``heading`` and ``mapping`` agree, listing every difference.

    Fails when a documented target is missing from ``mapping`` or maps other fields, when a
    mapped target is undocumented, when any field named on either side is not a schema field,
    and (if ``constants`` is given) when documented constant targets differ from it.
    """
    known = list(fields if fields is not None else schema_fields())
    documented, documented_constants = documented_mapping(markdown_path, heading)
    code = {t: (v,) if isinstance(v, str) else tuple(v) for t, v in mapping.items()}
    problems: list[str] = []
    for target, doc_fields in documented.items():
        for f in doc_fields:
            if not is_schema_field(f, known):
                problems.append(f"documented {target}: {f!r} is not a dlpfwd schema field")
        if target not in code:
            problems.append(f"documented {target} <- {', '.join(doc_fields)} is not mapped in code")
        elif set(code[target]) != set(doc_fields):
            problems.append(f"{target}: documented as {', '.join(doc_fields)} but code maps {', '.join(code[target])}")
    for target, code_fields in code.items():
        for f in code_fields:
            if not is_schema_field(f, known):
                problems.append(f"code maps {target} <- {f!r}, which is not a dlpfwd schema field")
        if target not in documented:
            problems.append(f"code maps {target} <- {', '.join(code_fields)} but {heading!r} does not document it")
    if constants is not None:
        wanted = set(constants)
        for t in sorted(documented_constants - wanted):
            problems.append(f"documented constant {t} is not a constant in code")
        for t in sorted(wanted - documented_constants):
            problems.append(f"code constant {t} is not documented")
    if problems:
        raise AssertionError(f"{markdown_path} [{heading}] and the code disagree:\n  " + "\n  ".join(problems))


def unmapped_fields(mapping: Mapping[str, Any], fields: Iterable[str] | None = None) -> list[str]:
    """Schema fields no target in ``mapping`` uses (for sinks that promise to map everything)."""
    used = {f for v in mapping.values() for f in ((v,) if isinstance(v, str) else v)}
    return [f for f in (fields if fields is not None else schema_fields()) if f not in used]
