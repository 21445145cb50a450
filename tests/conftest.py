"""Root test configuration: the session-wide real Postfix + Dovecot stack and OAuth server.

The ``mailstack`` fixture starts one private :class:`tests.support.mailstack.MailStack`
(real servers on free 127.0.0.1 ports, everything in a temp dir) the first
time a test asks for it, and stops it when the session ends.  It accepts
passwords (PLAIN/LOGIN) and OAuth bearer tokens (XOAUTH2/OAUTHBEARER, IMAP and
SMTP submission), which Dovecot checks by introspection at the session's
``oauth_server`` (:class:`tests.support.oauth_server.OAuthServer`).  A test
session that never requests them starts no servers.  A missing
Postfix/Dovecot is an error, never a skip: CI must fail loudly on a broken machine.
``hopstack``/``hops`` add the multi-hop route of :mod:`tests.support.hopstack`
(two more Postfix instances, rspamd, Knot DNS) in front of it;
``policystack``/``policy`` one more Postfix with a listener per mail policy,
right and wrong (:mod:`tests.support.policystack`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import hopstack as hopstack_support
from tests.support import policystack as policystack_support
from tests.support.hopstack import HopStack
from tests.support.mailstack import MailStack
from tests.support.oauth_server import OAuthServer
from tests.support.policystack import PolicyStack
from tests.support.routes import left_clean, plant_bystanders


@pytest.fixture(scope="session")
def oauth_server() -> Iterator[OAuthServer]:
    """The session's OAuth2 authorization server; the mail stack introspects its tokens.

    A test that changes it (stops it, makes it fail or hang, revokes a
    client) puts it back as it found it: the mail stack and later tests
    share it.
    """
    with OAuthServer() as server:
        yield server


@pytest.fixture(scope="session")
def mailstack(oauth_server: OAuthServer) -> Iterator[MailStack]:
    """A started private mail stack with OAuth, shared by the whole session."""
    with MailStack(oauth=oauth_server) as stack:
        yield stack


@pytest.fixture(scope="session")
def planted(mailstack: MailStack) -> int:
    """Plant one ordinary message in sink's INBOX and one in Junk, once."""
    return plant_bystanders(mailstack)


@pytest.fixture
def stack(mailstack: MailStack, planted: int) -> Iterator[MailStack]:
    """The stack, checked after each test: no probe mail left, bystanders untouched."""
    with left_clean(mailstack, planted):
        yield mailstack


@pytest.fixture(scope="session")
def hopstack(mailstack: MailStack) -> Iterator[HopStack]:
    """The multi-hop route (submission -> rspamd-filtered inbound -> ``mailstack``), per session.

    Started the first time a test asks for it (after the mail stack), stopped
    at the end.  Tests use :func:`hops`, which checks each test's clean-up.
    """
    with HopStack(mailstack) as hops:
        yield hops


@pytest.fixture
def hops(hopstack: HopStack, planted: int) -> Iterator[HopStack]:
    """The hop stack, checked after each test (queues drained, no hold, key back, no test mail)."""
    with hopstack_support.left_clean(hopstack, planted):
        yield hopstack


@pytest.fixture(scope="session")
def policystack(mailstack: MailStack) -> Iterator[PolicyStack]:
    """The policy Postfix (secure, open_relay, auth_in_clear, ... listeners), per session.

    Started the first time a test asks for it (after the mail stack), stopped
    at the end.  Tests use :func:`policy`, which checks each test's clean-up.
    """
    with PolicyStack(mailstack) as stack:
        yield stack


@pytest.fixture
def policy(policystack: PolicyStack, planted: int) -> Iterator[PolicyStack]:
    """The policy stack, checked after each test (queues drained, no test mail left)."""
    with policystack_support.left_clean(policystack, planted):
        yield policystack
