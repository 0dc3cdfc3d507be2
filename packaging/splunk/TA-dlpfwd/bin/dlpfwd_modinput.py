"""The ``dlpfwd://`` modular input: dlpfwd's sources running inside a Splunk heavy forwarder.

Splunk runs ``bin/dlpfwd.py`` every ``interval`` seconds per input stanza. Each run loads the
dlpfwd configuration named by ``config``, keeps its ``[[sources]]`` (all, or those named by
``sources``), replaces its ``[[sinks]]`` with one :class:`EventStreamSink` and runs one
``Forwarder.run_once()``: poll every source, normalize, apply the sensitive-value policy,
spool, deliver. Events are written to Splunk as modular-input XML (``<stream><event>...``) on
stdout, each with its time, sourcetype, source, host (and index when set), the data being the
same JSON as the ``splunk_hec`` sink's ``event`` (CIM fields + ``dlpfwd``).

State (cursors, ledger, spool, dead letters) lives in Splunk's ``checkpoint_dir`` under the
stanza name, so a restart resumes where the last run stopped; an event is *delivered* once
written and flushed to Splunk's pipe (the modular-input guarantee: Splunk's own queues from
there on; use HEC with indexer acknowledgement when you need "indexed").

Imports: the add-on's ``bin/lib`` (dlpfwd and its dependencies, vendored by
``packaging/splunk/build.py``) is put first on ``sys.path``; ``splunklib`` comes from there too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")
if os.path.isdir(LIB) and LIB not in sys.path:
    sys.path.insert(0, LIB)

from splunklib.modularinput import Argument, Event, EventWriter, Scheme, Script  # noqa: E402

from forwarder.hookspecs import hookimpl  # noqa: E402
from forwarder.settings import setting  # noqa: E402
from forwarder.sink import Entry, Outcome, Sink, SinkContext  # noqa: E402
from sinks.splunk_hec.envelope import EnvelopeBuilder  # noqa: E402

SCHEME = "dlpfwd"
SINK_TYPE = "splunk_modinput"
SINK_NAME = "splunk"


@dataclass
class StreamSettings:
    """Settings of the in-Splunk sink (built by the modular input, not by users)."""

    stanza: str = setting("", doc="the input stanza the events belong to")
    index: str = setting("", doc="index ('' = the input's index)")
    sourcetypes: dict[str, str] = setting(default_factory=dict, doc="sourcetype per event kind")
    host: str = setting("", doc="host ('' = this machine)")


class EventStreamSink(Sink):
    """Writes events to Splunk through the modular input's :class:`EventWriter`.

    ``writer`` is bound per run (:func:`bind`). Delivered = written and flushed.
    """

    settings_class = StreamSettings
    max_batch_events = 1000
    writer: Any = None

    def __init__(self, name: str, settings: StreamSettings, context: SinkContext) -> None:
        super().__init__(name, settings, context)
        self.envelopes = EnvelopeBuilder(index=settings.index, sourcetypes=settings.sourcetypes, host=settings.host)

    def write_batch(self, entries: Sequence[Entry]) -> Outcome:
        outcome = Outcome()
        if self.writer is None:
            return Outcome.all_retry(entries, "no Splunk event writer bound")
        for i, entry in enumerate(entries):
            try:
                event = to_splunk_event(self.envelopes, entry, self.settings.stanza)
            except Exception as exc:  # noqa: BLE001 - one bad entry goes to dead letters alone
                outcome.rejected[entry.id] = f"cannot format for Splunk: {type(exc).__name__}: {exc}"
                continue
            try:
                self.writer.write_event(event)
            except OSError as exc:  # Splunk closed the pipe: keep the rest in the spool
                outcome.retry.extend(e.id for e in entries[i:])
                outcome.retry_reason = f"writing to Splunk failed: {exc}"
                break
            outcome.delivered.append(entry.id)
        return outcome


def to_splunk_event(envelopes: EnvelopeBuilder, entry: Entry, stanza: str) -> Event:
    """One spooled entry as a splunklib :class:`Event` (time with milliseconds)."""
    meta = envelopes.metadata(entry.data)
    body = envelopes.event_body(entry.data, entry.payload)
    when = meta.get("time")
    return Event(
        data=body.decode("utf-8"),
        stanza=stanza or None,
        time=f"{when:.3f}" if when is not None else None,
        host=meta.get("host"),
        index=meta.get("index"),
        source=meta.get("source"),
        sourcetype=meta.get("sourcetype"),
        done=True,
        unbroken=True,
    )


class _StreamPlugin:
    """Registers :class:`EventStreamSink` with the plugin host."""

    @hookimpl
    def dlpfwd_register_sinks(self, register: Any) -> None:
        register(SINK_TYPE, EventStreamSink)


def make_host() -> Any:
    """A plugin host with dlpfwd's plugins and the stream sink."""
    from forwarder.plugins import PluginHost

    host = PluginHost()
    host.register_object("splunk_modinput", _StreamPlugin())
    return host.load()


def build_config(params: dict[str, Any], stanza: str, checkpoint_dir: str, host: Any) -> Any:
    """The configuration one input runs: the file's sources, one stream sink, state under the checkpoint dir."""
    from forwarder.config import SinkConfig, load_config
    from forwarder.errors import ConfigError

    path = str(params.get("config") or "").strip()
    if not path:
        raise ConfigError(["config: the path of a dlpfwd configuration file is required"])
    config = load_config(os.path.expandvars(path), host)
    wanted = [s.strip() for s in str(params.get("sources") or "").split(",") if s.strip()]
    known = [s.name for s in config.sources]
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ConfigError([f"sources: {', '.join(unknown)} not in {path} (it has: {', '.join(known) or 'none'})"])
    if wanted:
        config.sources = [s for s in config.sources if s.name in wanted]
    if not config.sources:
        raise ConfigError([f"{path}: no [[sources]] to run"])
    sourcetypes = {
        kind: str(params[f"sourcetype_{kind}"])
        for kind in ("audit", "alert", "incident")
        if params.get(f"sourcetype_{kind}")
    }
    short = stanza.split("://", 1)[-1] or "default"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in short)
    config.forwarder.state_dir = os.path.join(checkpoint_dir, safe)
    config.sinks = [
        SinkConfig(
            SINK_NAME,
            SINK_TYPE,
            StreamSettings(stanza=stanza, index=str(params.get("index") or ""), sourcetypes=sourcetypes),
        )
    ]
    return config


def run_input(params: dict[str, Any], stanza: str, checkpoint_dir: str, writer: Any, host: Any = None) -> Any:
    """Run one input once; returns the ``RunResult``."""
    from forwarder.runtime import Forwarder

    host = host or make_host()
    config = build_config(params, stanza, checkpoint_dir, host)
    EventStreamSink.writer = writer
    try:
        with Forwarder(config, host) as forwarder:
            return forwarder.run_once()
    finally:
        EventStreamSink.writer = None


class DlpfwdInput(Script):
    """The modular input script (splunklib): scheme, validation, streaming."""

    def get_scheme(self) -> Scheme:
        scheme = Scheme("dlpfwd: Microsoft Purview DLP")
        scheme.description = (
            "Runs dlpfwd's sources (Management Activity API, Graph security alerts and incidents, audit search) "
            "and indexes normalized, CIM-mapped DLP events."
        )
        scheme.use_external_validation = True
        scheme.use_single_instance = False
        scheme.streaming_mode = Scheme.streaming_mode_xml
        config = Argument("config", title="dlpfwd configuration file", data_type=Argument.data_type_string)
        config.description = "Path of the dlpfwd TOML file whose [[sources]] this input runs"
        config.required_on_create = True
        config.required_on_edit = True
        scheme.add_argument(config)
        sources = Argument("sources", title="Sources", data_type=Argument.data_type_string)
        sources.description = "Comma-separated [[sources]] names to run (empty: all)"
        scheme.add_argument(sources)
        for kind in ("audit", "alert", "incident"):
            arg = Argument(
                f"sourcetype_{kind}", title=f"Sourcetype of {kind} events", data_type=Argument.data_type_string
            )
            arg.description = f"Default dlpfwd:purview:{kind}"
            scheme.add_argument(arg)
        return scheme

    def validate_input(self, definition: Any) -> None:
        """Reject an input whose configuration does not load or names unknown sources."""
        from forwarder.errors import ConfigError

        params = dict(definition.parameters)
        checkpoint = str(definition.metadata.get("checkpoint_dir") or "")
        try:
            build_config(params, definition.metadata.get("name", "dlpfwd://validate"), checkpoint or ".", make_host())
        except ConfigError as exc:
            raise ValueError("; ".join(exc.problems)) from None

    def stream_events(self, inputs: Any, ew: EventWriter) -> None:
        host = make_host()
        checkpoint = str(inputs.metadata.get("checkpoint_dir") or ".")
        for stanza, params in inputs.inputs.items():
            try:
                result = run_input(dict(params), stanza, checkpoint, ew, host)
            except Exception as exc:  # noqa: BLE001 - report to splunkd.log, go on with the other inputs
                ew.log(EventWriter.ERROR, f"{stanza}: {type(exc).__name__}: {exc}")
                continue
            level = EventWriter.INFO if result.ok else EventWriter.WARN
            ew.log(level, f"{stanza}: " + result.summary().replace("\n", "; "))


def main(argv: list[str] | None = None) -> int:
    return int(DlpfwdInput().run(sys.argv if argv is None else argv))
