"""The ``file`` sink: JSON Lines files, ``native`` (the dlpfwd event) or ``ocsf`` layout.

* ``path`` may contain ``strftime`` codes, rendered in UTC at each write
  (``/var/log/dlpfwd/dlp-%Y%m%d.jsonl``): a new name starts a new file.
* Rotation by size: when the next batch would take the active file over ``max_bytes``, it is
  renamed to ``<name>.<n><suffix>`` (``dlp-20260101.1.jsonl``, ``.2``...) and a new one begun.
  A batch is never split across files.
* ``gzip = true`` writes each batch as its own gzip member (``.gz`` is appended to the name
  unless already there): concatenated members are one valid gzip file.
* Crash safety: a batch is written with one ``write`` call and fsynced before it counts as
  delivered. On start (and whenever a file is opened), a file whose tail is torn (a crash
  mid-write) is cut back to its last complete line (or complete gzip member) -- the last
  file written is remembered in the sink's durable state, so an older file left behind by
  the time pattern is repaired too; those events were never acknowledged, so the
  spool sends them again. A reader therefore never meets a partial line followed by more data.
* Files are created with mode 0600, directories with 0700. A file renamed or deleted by an
  external rotator (logrotate) is noticed at the next batch and a new one is created.
"""

from __future__ import annotations

import datetime as dt
import errno
import gzip
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from forwarder.hookspecs import hookimpl
from forwarder.ocsf import to_ocsf
from forwarder.settings import setting
from forwarder.sink import Entry, Health, Outcome, Sink


@dataclass
class FileSettings:
    """Settings of the ``file`` sink."""

    path: str = setting(doc="file to append to; strftime codes (UTC) allowed, e.g. ./out/dlp-%Y%m%d.jsonl")
    layout: str = setting(
        "native", doc="native: the dlpfwd event; ocsf: an OCSF Data Security Finding", choices=("native", "ocsf")
    )
    max_bytes: int = setting(
        100 * 1024 * 1024, doc="rotate when the file would exceed this size (0 = never)", minimum=0
    )
    gzip: bool = setting(False, doc="gzip-compress (one gzip member per batch)")
    fsync: bool = setting(True, doc="fsync after each batch (turn off only when the disk is not the durability point)")


# Errors an operator must fix (permissions, a file where a directory should be); others are retried.
_FATAL_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.EEXIST}


class FileSink(Sink):
    """Appends events as JSON Lines; see the module docstring."""

    settings_class = FileSettings
    max_batch_events = 10_000
    max_batch_bytes = 0
    carries_raw = True

    def __init__(self, name: str, settings: FileSettings, context: Any) -> None:
        super().__init__(name, settings, context)
        self._fd: int | None = None
        self._current = ""
        self._size = 0
        self._now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
        self._format: Callable[[Entry], bytes] = self._native if settings.layout == "native" else self._ocsf

    # ------------------------------------------------------------------ contract

    def connect(self) -> None:
        # A crash may have torn the tail of the last file written, which a time pattern may
        # have left behind; repair it before anything else.
        last = self._state_get("last_file")
        if isinstance(last, str) and last != self._render() and os.path.isfile(last):
            _repair_tail(Path(last), last.endswith(".gz"))
        self._open(self._render())

    def write_batch(self, entries: Sequence[Entry]) -> Outcome:
        outcome = Outcome()
        joined = self._native_batch(entries) if self.settings.layout == "native" else None
        if joined is not None:
            data, written = joined, [e.id for e in entries]
        else:
            lines: list[bytes] = []
            written = []
            for entry in entries:
                try:
                    lines.append(self._format(entry))
                    written.append(entry.id)
                except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
                    outcome.rejected[entry.id] = f"cannot format event for the file sink: {type(exc).__name__}"
            if not lines:
                return outcome
            data = b"".join(lines)
        if self.settings.gzip:
            data = gzip.compress(data, compresslevel=6, mtime=0)
        target = self._render()
        try:
            if self._fd is None or target != self._current or self._moved():
                self._open(target)
            assert self._fd is not None
            self._size = os.fstat(self._fd).st_size  # copytruncate may have emptied it
            if self.settings.max_bytes and self._size and self._size + len(data) > self.settings.max_bytes:
                self._rotate()
            _write_all(self._fd, data)
            if self.settings.fsync:
                _sync(self._fd)
            self._size += len(data)
        except OSError as exc:
            self._close_fd()
            reason = f"{exc.filename or target}: {exc.strerror or exc}"
            if exc.errno in _FATAL_ERRNOS:
                return outcome.merge(Outcome.stop(_only(entries, written), f"file sink cannot write {reason}"))
            return outcome.merge(Outcome.all_retry(_only(entries, written), reason))
        self.context.count("bytes_written", len(data))
        outcome.delivered.extend(written)
        return outcome

    def close(self) -> None:
        self._close_fd()

    def health(self) -> Health:
        health = Health()
        directory = Path(self._render()).parent
        ok = directory.is_dir() and os.access(directory, os.W_OK)
        return health.add("directory writable", ok, str(directory))

    # ------------------------------------------------------------------ formatting

    @staticmethod
    def _native_batch(entries: Sequence[Entry]) -> bytes | None:
        """The batch as JSON Lines when every payload is already one line holding one JSON
        object, else ``None`` (then each entry goes through :meth:`_native`).

        Spooled payloads were produced by ``orjson.dumps`` when they were spooled, so they are
        written as they are, joined straight from the spool's buffers (``payload_view``), without
        decoding them again (that decode was the sink's largest cost). A cheap shape check
        stays: each payload must start with ``{``, end with ``}`` and hold no line break (the
        only line breaks in the joined bytes are the separators), else the per-entry path
        re-encodes or rejects it."""
        if not entries:
            return None
        views = [e.payload_view() for e in entries]
        views.append(memoryview(b""))  # a trailing separator
        data = b"\n".join(views)
        find = data.find
        start = 0
        for v in views[:-1]:
            end = start + len(v)  # where this payload's separator must be
            if data[start] != 123 or data[end - 1] != 125 or find(b"\n", start) != end:  # { }
                return None
            start = end + 1
        return data

    def _native(self, entry: Entry) -> bytes:
        payload = entry.payload.strip()
        if not payload.startswith(b"{") or b"\n" in payload:
            payload = orjson.dumps(entry.data)  # re-encode: guarantees one line of JSON
        orjson.loads(payload)  # an undecodable payload is rejected, not written
        return payload + b"\n"

    def _ocsf(self, entry: Entry) -> bytes:
        return orjson.dumps(to_ocsf(entry.data)) + b"\n"

    # ------------------------------------------------------------------ files

    def _render(self) -> str:
        text = self._now().strftime(self.settings.path) if "%" in self.settings.path else self.settings.path
        if self.settings.gzip and not text.endswith(".gz"):
            text += ".gz"
        return text

    def _open(self, path: str) -> None:
        self._close_fd()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if target.exists():
            _repair_tail(target, self.settings.gzip)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        self._fd = fd
        self._current = path
        self._size = os.fstat(fd).st_size
        self._state_put("last_file", os.path.abspath(path))

    def _state_get(self, key: str) -> Any:
        state = self.context.state
        return state.get(key) if state is not None and hasattr(state, "get") else None

    def _state_put(self, key: str, value: Any) -> None:
        state = self.context.state
        if state is not None and hasattr(state, "put") and state.get(key) != value:
            state.put(key, value)

    def _moved(self) -> bool:
        """True when the open file was renamed or deleted behind our back (logrotate)."""
        assert self._fd is not None
        try:
            on_disk = os.stat(self._current)
        except FileNotFoundError:
            return True
        mine = os.fstat(self._fd)
        return (on_disk.st_ino, on_disk.st_dev) != (mine.st_ino, mine.st_dev)

    def _rotate(self) -> None:
        self._close_fd()
        current = Path(self._current)
        suffix = "".join(current.suffixes[-2:]) if self.settings.gzip else current.suffix
        stem = current.name[: len(current.name) - len(suffix)] if suffix else current.name
        n = 1
        while (current.parent / f"{stem}.{n}{suffix}").exists():
            n += 1
        os.rename(current, current.parent / f"{stem}.{n}{suffix}")
        self._open(self._current)

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _only(entries: Sequence[Entry], ids: list[int]) -> list[Entry]:
    wanted = set(ids)
    return [e for e in entries if e.id in wanted]


# fdatasync: the appended bytes and the file size (what a reader needs) reach the disk, without
# the extra journal write for the modification time; plain fsync where it does not exist.
_sync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _repair_tail(path: Path, compressed: bool) -> None:
    """Cut a torn tail left by a crash back to the last complete line / gzip member."""
    size = path.stat().st_size
    if size == 0:
        return
    good = _gzip_good_prefix(path) if compressed else _text_good_prefix(path, size)
    if good < size:
        with open(path, "r+b") as fh:
            fh.truncate(good)
            fh.flush()
            os.fsync(fh.fileno())


def _text_good_prefix(path: Path, size: int) -> int:
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return size
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            fh.seek(start)
            chunk = fh.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                return start + idx + 1
            pos = start
        return 0


def _gzip_good_prefix(path: Path) -> int:
    """Offset just after the last complete gzip member."""
    good = offset = 0
    decomp: Any = None
    with open(path, "rb") as fh:
        while chunk := fh.read(65536):
            buf = chunk
            while buf:
                if decomp is None:
                    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
                try:
                    decomp.decompress(buf)
                except zlib.error:
                    return good
                if decomp.eof:
                    offset += len(buf) - len(decomp.unused_data)
                    good = offset
                    buf = decomp.unused_data
                    decomp = None
                else:
                    offset += len(buf)
                    buf = b""
    return good


@hookimpl
def dlpfwd_register_sinks(register: Callable[[str, type], None]) -> None:
    register("file", FileSink)
