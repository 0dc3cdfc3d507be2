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
    ``args.config`` (the configuration path) and ``args.host`` (the loaded
    :class:`forwarder.plugins.PluginHost`) are set by the CLI; an option whose ``dest`` is
    ``host`` is refused and the command reported as a plugin failure.
    Returns: nothing. Convention: collect-all.
    """


# --------------------------------------------------------------------------- enrichment
# Called for every batch when ``[correlation] enabled = true``; never called otherwise.


@hookspec
def dlpfwd_enrich_events(events: list[Any], context: Any) -> None:
    """Add context to a batch's events before they are spooled (HR or CMDB lookups, ...).

    When: for every source batch, after normalization, the sensitive-value policy and the
    correlation index (so ``event.enrichment["correlation"]`` is already there), before the
    spool transaction. Only when ``[correlation] enabled = true``.
    Arguments: ``events`` -- the batch's :class:`forwarder.schema.DlpEvent` objects (shallow
    copies: write ONLY ``event.enrichment[<your plugin's key>]``; other fields are shared);
    ``context`` -- a :class:`forwarder.correlation.enrich.EnrichContext` (source, tenant,
    ``correlation`` links of the batch, a per-enricher ``cache`` (cachetools TTLCache), a
    ``deadline`` on the monotonic clock, a ``log``).
    Contract: batch your lookups (never one remote call per event); return within
    ``[correlation] enricher_timeout`` seconds. An implementation that raises or overruns
    leaves every event of the batch without its additions and flagged in
    ``event.enrichment["errors"][<plugin>]``; the events are spooled all the same, never
    blocked or lost. An overrunning call is abandoned and the enricher is skipped (flagged)
    until it returns.
    Returns: nothing. Convention: collect-all, each implementation called separately.
    """
