"""How a plugin declares its own settings, and how the host validates them.

A plugin declares a dataclass whose fields are made with :func:`setting`; the host builds it
from the plugin's table in the TOML configuration with :func:`build`, collecting *every*
problem with its key path (``sinks[1].url: expected an https URL``) instead of stopping at
the first. Supported field types: ``str``, ``int``, ``float``, ``bool``, ``Secret``,
``list[str]``, ``list[int]``, ``dict[str, str]``, ``dict[str, Any]``, ``Literal[...]``, optional
forms (``X | None``) and nested settings dataclasses.

Secrets (:class:`Secret`) come from ``${ENV}`` or ``file:/path`` references (or a literal, which
``dlpfwd check`` warns about); they print as ``***`` everywhere and are revealed only by
:meth:`Secret.reveal` at the point of use.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

REDACTED = "***"


class Secret:
    """A secret value that never prints. ``reveal()`` returns it at the point of use."""

    __slots__ = ("_value", "reference")

    def __init__(self, value: str, reference: str = "") -> None:
        self._value = value
        self.reference = reference  # e.g. "${SPLUNK_TOKEN}" or "file:/etc/dlpfwd/token"

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.reference or REDACTED!s})" if self.reference else f"Secret({REDACTED})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def resolve_secret(text: str) -> tuple[Secret | None, str | None]:
    """Resolve ``${ENV}``, ``file:/path`` or a literal into a :class:`Secret`; (None, problem) on failure."""
    m = _ENV_REF.match(text)
    if m:
        name = m.group(1)
        if name not in os.environ:
            return None, f"environment variable {name} is not set"
        return Secret(os.environ[name], text), None
    if text.startswith("file:"):
        path = Path(text[5:])
        try:
            return Secret(path.read_text(encoding="utf-8").strip(), text), None
        except OSError as exc:
            return None, f"cannot read secret file {path}: {exc.strerror}"
    return Secret(text, ""), None


def setting(
    default: Any = MISSING,
    *,
    doc: str,
    default_factory: Any = MISSING,
    choices: tuple[Any, ...] | None = None,
    url: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """Declare one setting. ``doc`` is shown by ``dlpfwd plugins --settings`` and in the docs.

    ``url`` restricts a string to URLs with these schemes (``("https",)``); ``choices`` to a set
    of values; ``minimum``/``maximum`` bound numbers. On a ``list[...]`` setting they apply to
    each item (``content_types: list[str] = setting(..., choices=(...))``). A setting with no
    default is required.
    """
    metadata = {"doc": doc, "choices": choices, "url": url, "minimum": minimum, "maximum": maximum}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class HttpSettings:
    """Transport settings every HTTP-speaking plugin accepts (``[sinks.http]`` / ``[sources.http]``)."""

    ca_bundle: str = setting("", doc="PEM file of CAs to trust instead of the system store")
    proxy: str = setting("", doc="HTTP(S) proxy URL for every request of this plugin", url=("http", "https"))
    verify: bool = setting(True, doc="verify TLS certificates (turn off only for lab work)")
    timeout: float = setting(30.0, doc="seconds before a request times out", minimum=0.1)
    client_cert: str = setting("", doc="PEM client certificate (with key, or see client_key) for mutual TLS")
    client_key: str = setting("", doc="PEM private key for client_cert, when it is a separate file")


def build(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    """Build settings dataclass ``cls`` from ``data`` (a TOML table).

    Appends ``"<path>.<key>: <what was expected>"`` to ``problems`` for every invalid or
    unknown key and every missing required one; returns the instance (or ``None`` when
    ``data`` is not a table at all). Never raises for bad input.
    """
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a table, got {_kind(data)}")
        return None
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            hint = _closest(key, known)
            problems.append(f"{_join(path, key)}: unknown setting" + (f" (did you mean {hint}?)" if hint else ""))
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        key_path = _join(path, name)
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                problems.append(f"{key_path}: required setting is missing ({f.metadata.get('doc', '')})")
            continue
        before = len(problems)
        value = _coerce(hints[name], data[name], key_path, problems, f.metadata)
        if len(problems) == before:
            kwargs[name] = value
    missing = [n for n, f in known.items() if n not in kwargs and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        return None
    return cls(**kwargs)


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) for every setting of ``cls``, nested ones dotted; for docs and CLI."""
    rows: list[tuple[str, str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            rows.extend(describe(hint, f"{prefix}{f.name}."))
            continue
        if f.default is not MISSING:
            default = repr(f.default)
        elif f.default_factory is not MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((prefix + f.name, _type_name(hint), default, f.metadata.get("doc", "")))
    return rows


def redacted(value: Any) -> Any:
    """A copy of a settings object / mapping fit for printing: every Secret becomes ``***``."""
    if isinstance(value, Secret):
        return REDACTED
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: redacted(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return value


# --------------------------------------------------------------------------- internals


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(hint))}]"
    return getattr(hint, "__name__", str(hint))


def _closest(key: str, known: dict[str, Any]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return match[0] if match else None


def _coerce(hint: Any, value: Any, path: str, problems: list[str], meta: typing.Mapping[str, Any]) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _coerce(args[0], value, path, problems, meta)
        for arg in args:
            trial: list[str] = []
            result = _coerce(arg, value, path, trial, meta)
            if not trial:
                return result
        problems.append(f"{path}: expected {_type_name(hint)}, got {_kind(value)}")
        return None
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return build(hint, value, path, problems)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            problems.append(f"{path}: expected one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
        return value
    if hint is Secret:
        if not isinstance(value, str) or not value:
            problems.append(f'{path}: expected a secret ("${{ENV_VAR}}", "file:/path" or a string)')
            return None
        secret, problem = resolve_secret(value)
        if problem:
            problems.append(f"{path}: {problem}")
        return secret
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, list):
            problems.append(f"{path}: expected an array, got {_kind(value)}")
            return None
        # choices / url / minimum / maximum of a list setting apply to each of its items
        return [_coerce(item, v, f"{path}[{i}]", problems, meta) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a table, got {_kind(value)}")
            return None
        _, vtype = typing.get_args(hint) or (str, Any)
        return {k: _coerce(vtype, v, f"{path}.{k}", problems, {}) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: expected true or false, got {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path}: expected an integer, got {_kind(value)}")
            return value
        return _bounded(value, path, problems, meta)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{path}: expected a number, got {_kind(value)}")
            return value
        return _bounded(float(value), path, problems, meta)
    if hint is str:
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {_kind(value)}")
            return value
        choices = meta.get("choices")
        if choices and value not in choices:
            problems.append(f"{path}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        schemes = meta.get("url")
        if schemes and value:
            parts = urlsplit(value)
            if parts.scheme not in schemes or not parts.netloc:
                wanted = " or ".join(schemes)
                article = "an" if wanted[0] in "aeiouh" else "a"
                problems.append(f"{path}: expected {article} {wanted} URL, got {value!r}")
        return value
    return value


def _bounded(value: float, path: str, problems: list[str], meta: typing.Mapping[str, Any]) -> Any:
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if lo is not None and value < lo:
        problems.append(f"{path}: expected at least {lo}, got {value}")
    if hi is not None and value > hi:
        problems.append(f"{path}: expected at most {hi}, got {value}")
    return value
