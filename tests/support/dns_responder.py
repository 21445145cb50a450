"""A tiny authoritative DNS server on loopback UDP for the DKIM key of the verdict tests.

It stands for the real authoritative server (knot, nsd) that publishes a
domain's ``selector._domainkey`` TXT record: it answers TXT questions for
the names it was given, NXDOMAIN for everything else, or (``silent``)
nothing at all, as a server that is down. dnspython builds and parses the
packets, so what our resolver reads is real DNS on the wire. The
end-to-end tests use a real DNS server (``tests/support/dns_server.py`` of
the multi-hop stack).
"""

from __future__ import annotations

import socket
import threading
from typing import Final

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

LOOPBACK: Final = "127.0.0.1"


def txt_strings(value: str) -> str:
    """``value`` as TXT rdata text: quoted strings of at most 255 bytes (DKIM keys are longer)."""
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join(f'"{chunk}"' for chunk in chunks)


class DnsResponder:
    """Answers TXT questions from :attr:`records` (name -> text) on a loopback UDP port."""

    def __init__(self) -> None:
        self.records: dict[str, str] = {}
        """Owner name (no trailing dot, lower case) -> the TXT record's text."""
        self.silent = False
        """Answer nothing, as a server that is down."""
        self.questions = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((LOOPBACK, 0))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dns-responder", daemon=True)

    @property
    def port(self) -> int:
        """The UDP port it listens on (127.0.0.1)."""
        port: int = self._sock.getsockname()[1]
        return port

    def __enter__(self) -> DnsResponder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            self.questions += 1
            if self.silent:
                continue
            self._sock.sendto(self._answer(data), peer)

    def _answer(self, data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        text = self.records.get(name)
        if text is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, txt_strings(text))
            response.answer.append(dns.rrset.from_rdata(question.name, 60, rdata))
        return response.to_wire()
