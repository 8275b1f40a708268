"""A small SMTP server on loopback that keeps every message it receives, for the e2e tests.

Enough of RFC 5321 for Airflow's ``SmtpHook`` (``smtplib``) without TLS or authentication:
``EHLO``/``HELO``, ``MAIL``, ``RCPT``, ``DATA``, ``RSET``, ``NOOP``, ``QUIT``. Started and stopped
by the test that uses it (``with SmtpSink() as smtp:``); it binds to 127.0.0.1 only.
"""

from __future__ import annotations

import email
import socketserver
import threading
from dataclasses import dataclass, field
from email.message import Message
from typing import Self

LOOPBACK = "127.0.0.1"


@dataclass
class Received:
    """One message as the server got it."""

    mail_from: str
    rcpt_to: list[str]
    data: bytes

    @property
    def message(self) -> Message:
        return email.message_from_bytes(self.data)

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))


@dataclass
class _State:
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def _reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        self._reply("220 localhost e2e SMTP sink")
        mail_from, rcpt_to = "", []
        while raw := self.rfile.readline(65536):
            command, _, argument = raw.decode(errors="replace").rstrip("\r\n").partition(" ")
            verb = command.upper()
            if verb == "EHLO":
                self.wfile.write(b"250-localhost\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n")
                self.wfile.flush()
            elif verb == "HELO":
                self._reply("250 localhost")
            elif verb == "MAIL":
                mail_from, rcpt_to = argument.partition(":")[2].strip().split(" ")[0].strip("<>"), []
                self._reply("250 OK")
            elif verb == "RCPT":
                rcpt_to.append(argument.partition(":")[2].strip().strip("<>"))
                self._reply("250 OK")
            elif verb == "DATA":
                self._reply("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while (line := self.rfile.readline(1 << 20)) not in (b".\r\n", b".\n", b""):
                    lines.append(line[1:] if line.startswith(b"..") else line)
                with self.server.state.lock:
                    self.server.state.messages.append(Received(mail_from, rcpt_to, b"".join(lines)))
                self._reply("250 OK: queued")
            elif verb == "RSET":
                mail_from, rcpt_to = "", []
                self._reply("250 OK")
            elif verb == "NOOP":
                self._reply("250 OK")
            elif verb == "QUIT":
                self._reply("221 Bye")
                return
            else:
                self._reply("502 Command not implemented")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: _State


class SmtpSink:
    """``with SmtpSink() as smtp:`` serves on ``smtp.port`` until the block ends; ``smtp.messages``."""

    def __init__(self) -> None:
        self._server = _Server((LOOPBACK, 0), _Handler)
        self._server.state = _State()
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="smtp-sink", daemon=True)

    @property
    def messages(self) -> list[Received]:
        with self._server.state.lock:
            return list(self._server.state.messages)

    @property
    def connection_uri(self) -> str:
        """An Airflow connection URI (``smtp_default``) that sends to this server, without TLS or SSL."""
        return f"smtp://{LOOPBACK}:{self.port}?disable_tls=true&disable_ssl=true&from_email=airflow%40example.com"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
