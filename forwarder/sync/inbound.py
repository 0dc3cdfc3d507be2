"""Applying the changes ``dlpfwd serve`` accepts where no ServiceNow sync runs.

With a ``servicenow`` sink whose ``[sinks.sync] enabled = true``, the status sync of ``dlpfwd
run`` (or ``dlpfwd sync``) applies every inbox change, inbound ones included, and mirrors them
to the ticket. Without one (e.g. a Splunk alert action -> ``dlpfwd serve`` -> Defender XDR),
``dlpfwd serve`` applies the inbound changes itself with :class:`InboundApplier`: the same
:class:`forwarder.sync.applier.Applier` (retries, dead letters, comment markers, shadow), with
a ticket side that has no tickets (:class:`NoTickets`) and only ``origin = inbound`` changes
(others, left by an earlier configuration, stay pending for a sync).

Defender is written with the app of a ``graph_security`` source: ``[serve] source`` names it,
or the configuration has exactly one (:func:`serve_source`; ConfigError naming
``serve.source`` otherwise).
"""

from __future__ import annotations

import logging
from typing import Any

from forwarder.errors import ConfigError
from forwarder.sync.applier import Applier, PassResult
from forwarder.sync.defender import DefenderIncidents
from forwarder.sync.loop import sync_sinks
from forwarder.sync.peer import TicketView

#: ``dlpfwd health`` / ``dlpfwd state`` name of the serve-side applier when it stops (401/403).
STOPPED_KEY = "serve:apply"
SOURCE_KEY = "serve.source"


def applies_inbound(config: Any) -> bool:
    """Whether ``dlpfwd serve`` applies what it accepts: no servicenow sink has the sync on
    (that sync applies them otherwise, mirroring the ticket)."""
    return not sync_sinks(config)


def serve_source(config: Any) -> Any:
    """The graph_security source whose app applies inbound changes (ConfigError naming ``serve.source``)."""
    wanted = config.serve.source if getattr(config, "serve", None) is not None else ""
    graphs = [s for s in config.sources if s.type == "graph_security"]
    if wanted:
        found = [s for s in graphs if s.name == wanted]
        if not found:
            known = f" (graph_security sources: {', '.join(s.name for s in graphs)})" if graphs else ""
            raise ConfigError([f"{SOURCE_KEY}: no graph_security source named {wanted!r}{known}"])
        return found[0]
    if len(graphs) != 1:
        detail = (
            "none is configured"
            if not graphs
            else f"there are several: name one of {', '.join(s.name for s in graphs)}"
        )
        raise ConfigError(
            [f"{SOURCE_KEY}: dlpfwd serve applies accepted changes with a graph_security source's app; {detail}"]
        )
    return graphs[0]


def applier_problems(config: Any) -> list[str]:
    """Why ``dlpfwd serve`` could not apply what it accepts (``serve.source`` unresolvable);
    ``[]`` when it can, or when a ServiceNow sync applies instead."""
    if not applies_inbound(config):
        return []
    try:
        serve_source(config)
    except ConfigError as exc:
        return list(exc.problems)
    return []


class NoTickets:
    """The ticket side of a deployment without ServiceNow: no ticket, nothing to map or write."""

    name = "none"

    def changes(self, cursor: dict[str, Any] | None) -> tuple[list[TicketView], dict[str, Any]]:
        return [], cursor or {}

    def ticket(self, incident_id: str) -> TicketView | None:
        return None

    def baseline(self, incident_id: str) -> dict[str, dict[str, str]] | None:
        return None

    def to_defender(self, raw: dict[str, str]) -> dict[str, str | None]:
        return {}

    def to_ticket(self, defender: dict[str, str]) -> dict[str, str | None]:
        return {}

    def write(
        self, view: TicketView, values: dict[str, str], defender: dict[str, str], note: str
    ) -> tuple[str, dict[str, str]]:
        raise AssertionError("no ticket to write")  # never called: ticket() is always None

    def close(self) -> None:
        pass


class InboundApplier:
    """Applies pending ``inbound`` changes to Defender XDR; one :meth:`run_once` per pass."""

    def __init__(self, store: Any, defender: DefenderIncidents) -> None:
        self.store = store
        self.defender = defender
        self.applier = Applier(store, defender, NoTickets(), set(), origins=("inbound",))

    @classmethod
    def build(cls, config: Any, store: Any, transport: Any = None) -> InboundApplier:
        """The applier for ``config`` (ConfigError naming ``serve.source``)."""
        source = serve_source(config)
        log = logging.getLogger("dlpfwd.serve.graph")
        return cls(store, DefenderIncidents(source.settings, log, transport=transport))

    def run_once(self, dry_run: bool = False) -> PassResult:
        """Apply what is due. RetriableError (the token service down) and FatalError (401/403:
        the app lacks ``SecurityIncident.ReadWrite.All``) propagate."""
        return self.applier.run(dry_run=dry_run)

    def close(self) -> None:
        self.defender.close()
