"""A sink in one file: appends one line per event, ``<id>\\t<severity>\\t<title>``, to a text file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from forwarder.hookspecs import hookimpl
from forwarder.settings import setting
from forwarder.sink import Entry, Outcome, Sink


@dataclass
class ExampleSettings:
    path: str = setting(doc="text file to append to")
    prefix: str = setting("", doc="text written before each line")


class ExampleSink(Sink):
    settings_class = ExampleSettings
    max_batch_events = 100

    def write_batch(self, entries: Sequence[Entry]) -> Outcome:
        lines = []
        outcome = Outcome()
        for entry in entries:
            data = entry.data
            if not data.get("id"):
                outcome.rejected[entry.id] = "event has no id"
                continue
            title = str(data.get("title", "")).replace("\n", " ").replace("\t", " ")
            lines.append(f"{self.settings.prefix}{data['id']}\t{data.get('severity', '')}\t{title}\n")
            outcome.delivered.append(entry.id)
        with open(self.settings.path, "a", encoding="utf-8") as fh:
            fh.writelines(lines)
        return outcome


@hookimpl
def dlpfwd_register_sinks(register: Callable[[str, type], None]) -> None:
    register("example", ExampleSink)
