"""Two-way status sync between Defender XDR incidents and ServiceNow tickets (``docs/itsm.md``).

* :mod:`forwarder.sync.change` -- :class:`StatusChange`, one observed or requested change;
* :mod:`forwarder.sync.inbox` -- the durable inbox in the state store (``enqueue``), idempotent
  on (origin, reference, version), and the per-incident *shadow* of the last agreed values;
* :mod:`forwarder.sync.reconcile` -- the per-field decision (which side changed, conflicts);
* :mod:`forwarder.sync.applier` -- applies pending changes to Defender and the ticket;
* :mod:`forwarder.sync.loop` -- the loop inside ``dlpfwd run`` and ``dlpfwd sync``.
* :mod:`forwarder.sync.inbound` -- applying ``dlpfwd serve``'s changes where no ServiceNow sync runs;
* :mod:`forwarder.sync.checks` -- the start-up checks ``dlpfwd check`` runs for the sync and serve.
"""
