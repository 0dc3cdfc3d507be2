"""Every dlpfwd hook, with its contract. Provisional until 1.0.

Plugins implement hooks with the :data:`hookimpl` marker, in a module named by an entry point
of the ``dlpfwd`` group (built-in plugins are registered exactly the same way)::

    # pyproject.toml
    [project.entry-points.dlpfwd]
    my_sink = "my_package.my_sink"

    # my_package/my_sink.py
    from forwarder.hookspecs import hookimpl

    @hookimpl
    def dlpfwd_register_sinks(register):
        register("my_sink", MySink)

Registration hooks hand the plugin a ``register`` callback and receive *classes or
functions*, never live objects: instances are built later from the configuration, so plugin
modules stay cheap to import. The host validates each registration (name, contract,
settings class) and reports a broken one by plugin name without stopping the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "dlpfwd"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------- registration
# Called once per process, right after plugins are loaded, in plugin registration order.
# Calling convention: collect-all (every implementation is called; return values ignored).


@hookspec
def dlpfwd_register_sources(register: Callable[[str, type], None]) -> None:
    """Register source types.

    When: once, at start-up, after plugins are loaded.
    Arguments: ``register(type_name, source_class)`` -- ``type_name`` is what a configuration's
    ``[[sources]] type = ...`` names; ``source_class`` subclasses :class:`forwarder.source.Source`
    and sets ``settings_class``.
    Returns: nothing. Convention: collect-all.
    """


@hookspec
def dlpfwd_register_sinks(register: Callable[[str, type], None]) -> None:
    """Register sink types.

    When: once, at start-up, after plugins are loaded.
    Arguments: ``register(type_name, sink_class)`` -- ``sink_class`` subclasses
    :class:`forwarder.sink.Sink` and sets ``settings_class``.
    Returns: nothing. Convention: collect-all.
    """


@hookspec
def dlpfwd_register_normalizers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register normalizers for raw record kinds.

    When: once, at start-up.
    Arguments: ``register(record_kind, normalizer)`` -- ``normalizer(data, ctx)`` takes a raw
    record's JSON object and a :class:`forwarder.source.NormalizeContext` and returns a list of
    :class:`forwarder.schema.DlpEvent`; it raises :class:`forwarder.errors.MalformedRecord` for a
    record it cannot read. One normalizer per kind; a second registration is an error.
    Returns: nothing. Convention: collect-all.
    """


@hookspec
def dlpfwd_register_commands(register: Callable[..., None]) -> None:
    """Add CLI sub-commands.

    When: once, when the CLI builds its parser.
    Arguments: ``register(name, help, configure, run)`` -- ``configure(parser)`` adds arguments
    to an ``argparse.ArgumentParser``; ``run(args) -> int`` executes and returns the exit code.
    Returns: nothing. Convention: collect-all.
    """
