"""The message template against build_message on generated probe names and addresses.

Whatever a probe is called and whichever addresses it uses (ASCII or not,
short or long enough to fold), the message a run fills in from the
probe's template is the message ``build_message`` makes: the same header
fields byte for byte but for ``Date`` and ``Message-ID``, and the same body.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from smtp_probe.probe.message import MessageTemplate, TokenSigner, build_message, outgoing

SIGNER = TokenSigner(b"p" * 32)
_NAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=90
)
_ATOM = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.äöüøé東京", min_size=1, max_size=40
)
_ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}.test", _ATOM, _ATOM)


def fields(data: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return re.split(rb"\r\n(?![ \t])", head), body


@given(probe=_NAME, mail_from=_ADDRESS, rcpt_to=_ADDRESS, reflector=st.booleans())
def test_template_makes_what_build_message_makes(
    probe: str, mail_from: str, rcpt_to: str, reflector: bool
) -> None:
    token = SIGNER.new(probe)
    made = MessageTemplate(
        probe=probe, mail_from=mail_from, rcpt_to=rcpt_to, reflector=reflector
    ).render(token)
    want = outgoing(
        build_message(
            token=token, probe=probe, mail_from=mail_from, rcpt_to=rcpt_to, reflector=reflector
        )
    )

    got_fields, got_body = fields(made.data)
    want_fields, want_body = fields(want.data)
    assert got_body == want_body
    assert len(got_fields) == len(want_fields)
    for got, wanted in zip(got_fields, want_fields, strict=True):
        name = wanted.partition(b":")[0].lower()
        assert got.partition(b":")[0].lower() == name
        if name not in (b"date", b"message-id"):
            assert got == wanted
    assert made.utf8 == want.utf8
    assert made.subject == want.subject
