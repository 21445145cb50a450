"""Real-world ``Received:`` chains, newest first and whitespace-folded, as ``Arrival.received`` holds them.

Each chain keeps the shape its MTA writes (taken from real messages,
with host names, addresses and ids replaced by documentation values),
so the parser is tested against what servers send, not against what
we would like them to send. Times are set so the expected per-hop
delays are easy to read off.
"""

from __future__ import annotations

from typing import Final

POSTFIX_DOVECOT: Final = (
    # Dovecot 2.3 LMTP, as the test MailStack writes it (its zero-padded day).
    "from mx.example.test by mx.example.test with LMTP id uFpED/0eFmulGAAAg+zDdQ "
    "(envelope-from <probe@example.test>) for <sink@example.test>; Mon, 07 Dec 2026 02:50:38 +0000",
    # Postfix 3.7 submission with TLS and SASL.
    "from [127.0.0.1] (unknown [127.0.0.1]) (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 "
    "(256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256) "
    "(No client certificate requested) by mx.example.test (Postfix) with ESMTPSA id 36DA5212724 "
    "for <sink@example.test>; Mon,  7 Dec 2026 02:50:37 +0000 (UTC)",
)
"""Postfix submission (ESMTPSA, TLS comment) then Dovecot LMTP one second later."""

POSTFIX_RELAY_CHAIN: Final = (
    "from mx.example.net by mx.example.net with LMTPS id 8Kj0Mh8fFmvXGAAAg+zDdQ "
    "(envelope-from <probe@example.org>) for <sink@example.net>; Mon, 07 Dec 2026 02:51:10 +0000",
    "from relay.example.org (relay.example.org [192.0.2.30]) (using TLSv1.3 with cipher "
    "TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS "
    "(2048 bits) server-digest SHA256) (No client certificate requested) by mx.example.net "
    "(Postfix) with ESMTPS id 4QmZ1f2k3Lz9sWm for <sink@example.net>; Mon,  7 Dec 2026 "
    "02:51:08 +0000 (UTC)",
    "from submit.example.org (submit.example.org [192.0.2.25]) by relay.example.org (Postfix) "
    "with ESMTP id 4QmZ0x5Yh7z4wQr for <sink@example.net>; Mon,  7 Dec 2026 02:50:38 +0000 (UTC)",
    "from [192.0.2.99] (unknown [192.0.2.99]) by submit.example.org (Postfix) with ESMTPSA id "
    "4QmZ0x1Kc2z3vHn for <sink@example.net>; Mon,  7 Dec 2026 02:50:37 +0000 (UTC)",
)
"""Submission, a relay that held it 30 s (plain ESMTP), the MX, Dovecot LMTP over TLS."""

MICROSOFT_365: Final = (
    "from DB9PR04MB8412.eurprd04.prod.outlook.com (2603:10a6:10:2c1::13) by "
    "AM9PR04MB8780.eurprd04.prod.outlook.com with HTTPS; Mon, 7 Dec 2026 02:50:42 +0000",
    "from AS9PR06CA0123.eurprd06.prod.outlook.com (2603:10a6:20b:465::25) by "
    "DB9PR04MB8412.eurprd04.prod.outlook.com (2603:10a6:10:2c1::13) with Microsoft SMTP Server "
    "(version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.7633.22; "
    "Mon, 7 Dec 2026 02:50:41 +0000",
    "from AM4PEPF00027A5F.eurprd04.prod.outlook.com (2603:10a6:20b:465:cafe::e2) by "
    "AS9PR06CA0123.outlook.office365.com (2603:10a6:20b:465::25) with Microsoft SMTP Server "
    "(version=TLS1_3, cipher=TLS_AES_256_GCM_SHA384) id 15.20.7633.22 via Frontend Transport; "
    "Mon, 7 Dec 2026 02:50:40 +0000",
    "from mail.example.org (192.0.2.25) by AM4PEPF00027A5F.mail.protection.outlook.com "
    "(10.167.16.73) with Microsoft SMTP Server id 15.20.7633.22 via Frontend Transport; "
    "Mon, 7 Dec 2026 02:50:39 +0000",
)
"""Exchange Online Protection in, two Microsoft SMTP Server hops, then the mailbox over HTTPS."""

GMAIL: Final = (
    "by 2002:a05:6a10:8e0b:b0:5a1:2c3d:4e5f with SMTP id k11csp1234567pxh; "
    "Mon, 7 Dec 2026 02:50:40 -0800 (PST)",
    "from mail-sor-f41.google.com (mail-sor-f41.google.com. [209.85.220.41]) by mx.google.com "
    "with SMTPS id a1sor123456qkb.12.2026.12.07.02.50.39 for <sink@example.net> "
    "(Google Transport Security); Mon, 07 Dec 2026 02:50:39 -0800 (PST)",
    "by 2002:a17:90a:1234:b0:2a0:1234:5678 with SMTP id abc123def456; "
    "Mon, 07 Dec 2026 02:50:37 -0800 (PST)",
)
"""Gmail to Gmail: address-only ``by`` hosts, ``SMTPS`` in the middle, Pacific time."""

EXIM: Final = (
    "from [192.0.2.10] (helo=mail.example.org) by mx.example.net with esmtps (TLS1.3) "
    "tls TLS_AES_256_GCM_SHA384 (Exim 4.96) (envelope-from <probe@example.org>) "
    "id 1t2AbC-000XyZ-1q for sink@example.net; Mon, 07 Dec 2026 02:50:39 +0000",
    "from probe by mail.example.org with local (Exim 4.96) (envelope-from <probe@example.org>) "
    "id 1t2AbB-000Xy9-0d for sink@example.net; Mon, 07 Dec 2026 02:50:38 +0000",
)
"""Exim local submission, then Exim over TLS (lower-case ``esmtps``, ``tls <cipher>``)."""

SENDMAIL: Final = (
    "from mail.example.org (mail.example.org [192.0.2.25]) by mx.example.net "
    "(8.17.1.9/8.17.1.9) with ESMTPS id 4B72oc1Q012345 (version=TLSv1.3 "
    "cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NOT) for <sink@example.net>; "
    "Mon, 7 Dec 2026 02:50:43 +0100",
    "(from probe@localhost) by mail.example.org (8.17.1.9/8.17.1.9/Submit) id 4B72obQk012340; "
    "Mon, 7 Dec 2026 02:50:38 +0100",
)
"""Sendmail's local submission (``from`` only in a comment, no ``with``), then ESMTPS."""

QMAIL: Final = (
    "(qmail 7823 invoked from network); 7 Dec 2026 02:50:40 -0000",
    "from unknown (HELO mail.example.org) (192.0.2.25) by mx.example.net; 7 Dec 2026 02:50:39 -0000",
)
"""qmail-like lines: no ``with`` at all, one line nothing but a comment, ``-0000`` zones."""

SKEWED: Final = (
    "from relay.example.org by mx.example.net with LMTP; Mon, 7 Dec 2026 02:51:00 +0000",
    "from submit.example.org by relay.example.org (Postfix) with ESMTPS id 4QmZ; "
    "Mon, 7 Dec 2026 02:47:30 +0000 (UTC)",
    "from [192.0.2.99] by submit.example.org (Postfix) with ESMTPSA id 4QmY; "
    "Mon, 7 Dec 2026 02:50:37 +0000 (UTC)",
)
"""The relay's clock runs 3.5 minutes slow: its hop is before the submission's."""

MISSING_DATES: Final = (
    "from relay.example.org by mx.example.net with ESMTP id 1; Mon, 7 Dec 2026 02:50:45 +0000",
    "from submit.example.org by relay.example.org with ESMTP id 2",
    "from [192.0.2.99] by submit.example.org with ESMTPSA id 3; not a date at all",
    "from [192.0.2.98] by first.example.org with ESMTP id 4; Mon, 7 Dec 2026 02:50:37 +0000",
)
"""Two hops in the middle without a usable time (no ``;``; words that are no date)."""

GARBAGE: Final = (
    "",
    "garbage with no structure whatsoever",
    "from (unclosed comment by x.example with ESMTPS; Mon, 7 Dec 2026 02:50:37 +0000",
    "by y.example with ESMTP; Mon, 7 Dec 99999 02:50:37 +0000",
    "by z.example with ESMTP; Mon, 7 Dec 2026 02:50:37 +9999",
    "from by with ; ;",
    "by " + "h" * 400 + " with ESMTP; Mon, 7 Dec 2026 02:50:37 +0000",
)
"""Broken lines: empty, no keywords, an unclosed comment, impossible dates, bare keywords, a huge host."""
