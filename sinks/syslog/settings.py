"""Settings of the ``syslog`` sink (``[[sinks]] type = "syslog"``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from forwarder.settings import setting
from sinks.syslog.header import FACILITIES


@dataclass
class TlsOptions:
    """``[sinks.tls]``: RFC 5425 client settings (used when ``transport = "tls"``)."""

    ca_bundle: str = setting("", doc="PEM file of CAs to trust for the receiver's certificate (default: system store)")
    verify: bool = setting(True, doc="verify the receiver's certificate and host name (turn off only for lab work)")
    server_name: str = setting("", doc="name expected in the receiver's certificate and sent as SNI (default: host)")
    client_cert: str = setting("", doc="PEM client certificate (with its key, or see client_key) for mutual TLS")
    client_key: str = setting("", doc="PEM private key of client_cert when it is a separate file")
    min_version: str = setting("TLSv1.2", doc="lowest TLS version accepted", choices=("TLSv1.2", "TLSv1.3"))


@dataclass
class SyslogSettings:
    """Where and how to send syslog messages. See docs/qradar.md for the delivery guarantee."""

    host: str = setting(doc="syslog receiver (QRadar event collector) host name or IP address")
    port: int = setting(0, doc="receiver port; 0 = 514 for udp/tcp, 6514 for tls", minimum=0, maximum=65535)
    transport: str = setting("tls", doc="udp, tcp or tls (RFC 5425)", choices=("udp", "tcp", "tls"))
    framing: str = setting(
        "octet_counting",
        doc="stream framing (RFC 6587): octet_counting (required by RFC 5425) or newline",
        choices=("octet_counting", "newline"),
    )
    format: str = setting("cef", doc="message format: cef, leef (2.0) or json", choices=("cef", "leef", "json"))
    header: str = setting("rfc5424", doc="syslog header: rfc5424 or rfc3164", choices=("rfc5424", "rfc3164"))
    hostname: str = setting("", doc="HOSTNAME in the header = QRadar's Log Source Identifier (default: this host)")
    app_name: str = setting("dlpfwd", doc="APP-NAME of RFC 5424 headers (and the RFC 3164 tag, if enabled)")
    rfc3164_tag: bool = setting(False, doc="add 'app_name: ' after the RFC 3164 host name (QRadar's LEEF has none)")
    facility: str = setting("local0", doc="syslog facility name", choices=tuple(FACILITIES))
    leef_delimiter: str = setting("^", doc="LEEF 2.0 attribute delimiter: one character or 0xHH (e.g. 0x09 for TAB)")
    max_message_bytes: int = setting(
        0,
        doc="largest message (header included) in bytes; 0 = 2048 for udp, 8192 for tcp/tls. "
        "Match the receiver's limit (QRadar: Max TCP/UDP Syslog Payload Length)",
        minimum=0,
        maximum=65507,
    )
    timeout: float = setting(10.0, doc="seconds to connect and to write before giving up", minimum=0.1)
    confirm_seconds: float = setting(
        0.5,
        doc="tcp/tls: an event counts as delivered once the receiver's TCP stack acknowledged its bytes "
        "and the connection then stayed up this long",
        minimum=0.0,
    )
    ack_timeout: float = setting(
        30.0, doc="tcp/tls: reconnect (and re-send) when written bytes stay unacknowledged this long", minimum=1.0
    )
    reconnect_initial: float = setting(
        1.0, doc="first delay after a failed connection (doubles each time)", minimum=0.0
    )
    reconnect_max: float = setting(60.0, doc="longest delay between connection attempts", minimum=0.1)
    tls: TlsOptions = field(default_factory=TlsOptions)

    def effective_port(self) -> int:
        return self.port or (6514 if self.transport == "tls" else 514)

    def effective_max_bytes(self) -> int:
        return self.max_message_bytes or (2048 if self.transport == "udp" else 8192)
