"""Test kit for dlpfwd plugin authors (importable by third parties; needs pytest).

* :class:`SinkContractTests`, :class:`SourceContractTests`, :class:`NormalizerContractTests`:
  pytest suites to subclass (see :mod:`forwarder.testing.contracts`);
* :func:`sample_events` and friends: canonical DLP events, hostile strings included
  (:mod:`forwarder.testing.events`);
* :func:`check_mapping_table`: keeps a mapping table in ``docs/schema.md`` and a formatter's
  ``MAPPING`` in agreement (:mod:`forwarder.testing.mapping`);
* :func:`sink_context`, :func:`source_context`, :func:`make_entries`: build what the host
  would hand a plugin.
"""

from forwarder.testing.contracts import (
    MemoryState,
    NormalizerContractTests,
    SinkContractTests,
    SourceContractTests,
    assert_accounted,
    assert_settings_documented,
    make_entries,
    sink_context,
    source_context,
)
from forwarder.testing.events import HOSTILE_STRINGS, hostile_event, sample_events
from forwarder.testing.mapping import check_mapping_table, documented_mapping, markdown_table, unmapped_fields

__all__ = [
    "HOSTILE_STRINGS",
    "MemoryState",
    "NormalizerContractTests",
    "SinkContractTests",
    "SourceContractTests",
    "assert_accounted",
    "assert_settings_documented",
    "check_mapping_table",
    "documented_mapping",
    "hostile_event",
    "make_entries",
    "markdown_table",
    "sample_events",
    "sink_context",
    "source_context",
    "unmapped_fields",
]
