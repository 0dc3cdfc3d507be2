"""Correlation of DLP events with Defender alerts and incidents, and enrichment.

* :mod:`forwarder.correlation.settings` -- ``[correlation]`` settings (imported by the config).
* :mod:`forwarder.correlation.keys` -- the keys of an event and its side.
* :mod:`forwarder.correlation.index` -- the SQLite index, the rules and the links.
* :mod:`forwarder.correlation.enrich` -- the enricher runner (``dlpfwd_enrich_events``).
* :mod:`forwarder.correlation.enricher` -- the built-in correlation enricher.
* :mod:`forwarder.correlation.stage` -- the pipeline stage tying them together.

See ``docs/correlation.md``.
"""
