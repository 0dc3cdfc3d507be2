"""A private rsyslogd for the syslog sink tests.

``Rsyslog(work_dir)`` writes its own configuration (no imuxsock/imklog, its own pid file and
work directory, so it never touches a system instance), listens on free loopback ports --
UDP, TCP (both framings: imtcp detects octet counting by itself) and TLS (imtcp with the gtls
driver and a generated CA) -- and writes every received message, raw, one per line, to
``<input>.log``. Control-character escaping on receive is off and the maximum message size is
raised, so what the file holds is exactly what arrived. ``restart()`` stops it (SIGTERM,
which lets it flush its queue) and starts it again on the same ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

RSYSLOGD = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None)
MAX_MESSAGE = 65536


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Rsyslog:
    """One private rsyslogd; see the module docstring."""

    def __init__(self, work_dir: Path, ca: Path, cert: Path, key: Path, buffered: bool = False) -> None:
        self.dir = work_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "spool").mkdir(exist_ok=True)
        self.ca, self.cert, self.key = ca, cert, key
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tcp_port = free_port()
        self.tls_port = free_port()
        self.mtls_port = free_port()
        self.conf = self.dir / "rsyslog.conf"
        self.pidfile = self.dir / "rsyslogd.pid"
        self.stderr = self.dir / "rsyslogd.err"
        self.proc: subprocess.Popen[bytes] | None = None
        # buffered (benchmarks): big asynchronous file writes, flushed every second
        buffering = ' asyncWriting="on" ioBufferSize="1m" flushOnTXEnd="off" flushInterval="1"'
        self.write_options = buffering if buffered else ""
        self.conf.write_text(self._config())

    def log(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    def _config(self) -> str:
        d = self.dir
        out = "\n".join(
            f'ruleset(name="{name}") {{ action(type="omfile" file="{d / (name + ".log")}" template="raw"'
            f"{self.write_options}) }}"
            for name in ("udp", "tcp", "tls", "mtls")
        )
        return f"""
global(
  workDirectory="{d / "spool"}"
  maxMessageSize="{MAX_MESSAGE}"
  parser.escapeControlCharactersOnReceive="off"
  defaultNetstreamDriverCAFile="{self.ca}"
  defaultNetstreamDriverCertFile="{self.cert}"
  defaultNetstreamDriverKeyFile="{self.key}"
)
template(name="raw" type="string" string="%rawmsg%\\n")
{out}
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="udp" rcvbufSize="16m")
module(load="imtcp" maxSessions="200")
input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{self.mtls_port}" ruleset="mtls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
"""

    def start(self) -> None:
        assert RSYSLOGD, "rsyslogd is not installed"
        self.pidfile.unlink(missing_ok=True)
        with self.stderr.open("ab") as err:
            self.proc = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                stdout=err,
                stderr=err,
                cwd=self.dir,
            )
        wait_for(self._listening, timeout=15, what="rsyslogd to listen")

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"rsyslogd exited ({self.proc.returncode}): {self.stderr.read_text()[-2000:]}")
        for port in (self.tcp_port, self.tls_port):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    pass
            except OSError:
                return False
        return True

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def lines(self, name: str) -> list[str]:
        """Every message received on input ``name`` so far (one per line, raw)."""
        path = self.log(name)
        if not path.exists():
            return []
        data = path.read_bytes().decode("utf-8")
        return data.split("\n")[:-1]

    def wait_lines(self, name: str, count: int, timeout: float = 20.0) -> list[str]:
        wait_for(lambda: len(self.lines(name)) >= count, timeout=timeout, what=f"{count} messages on {name}")
        return self.lines(name)
