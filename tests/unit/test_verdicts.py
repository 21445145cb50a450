"""Reading Authentication-Results and spam headers: what is believed, what wins, what is ignored."""

from __future__ import annotations

import pytest

from smtp_probe.probe.result import AuthVerdict, Verdicts
from smtp_probe.probe.verdicts import describe, metric_result, misses, read_verdicts

RECEIVER = "mail.example.test"

# Seen in a delivered message from OpenDKIM 2.11 (see shared research mta-facts-2).
OPENDKIM_GOOD = (
    "mail.example.test; dkim=pass (2048-bit key) header.d=example.test "
    "header.i=@example.test header.a=rsa-sha256 header.s=mail header.b=AbCdEf12"
)
OPENDKIM_FAIL = (
    'mail.example.test; dkim=fail reason="signature verification failed" (2048-bit key) '
    "header.d=example.test header.i=@example.test header.a=rsa-sha256 header.s=mail header.b=AbC"
)
OPENDMARC = "mail.example.test; dmarc=pass (p=none dis=none) header.from=example.test"
GMAIL = """mx.google.com;
       dkim=pass header.i=@example.com header.s=20230601 header.b=abc;
       spf=pass (google.com: domain of x@example.com designates 192.0.2.1 as permitted sender) smtp.mailfrom=x@example.com;
       dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=example.com"""
MICROSOFT = (
    "mx.microsoft.com 1; spf=pass (sender ip is 192.0.2.1) smtp.rcpttodomain=example.net "
    "smtp.mailfrom=example.com; dmarc=pass (p=reject sp=reject pct=100) action=none "
    "header.from=example.com; dkim=pass (signature was verified) header.d=example.com; arc=none"
)
FROM = ("From", "smtp-probe <probe@example.test>")


def ar(value: str) -> tuple[str, str]:
    return ("Authentication-Results", value)


def test_the_receivers_results_are_read_per_method() -> None:
    verdicts = read_verdicts([ar(OPENDKIM_GOOD), ar(OPENDMARC), FROM], RECEIVER)
    assert verdicts.result("dkim") == "pass"
    assert verdicts.result("dmarc") == "pass"
    assert verdicts.result("spf") == "none"  # missing is none, never pass
    assert verdicts.ignored == 0
    dkim = verdicts.results[0]
    assert "header.d=example.test" in dkim.detail
    assert "header.b" not in dkim.detail


def test_authserv_id_is_compared_case_insensitively() -> None:
    verdicts = read_verdicts([ar(OPENDKIM_GOOD)], "MAIL.Example.TEST")
    assert verdicts.result("dkim") == "pass"


def test_a_header_of_another_authserv_id_is_never_believed() -> None:
    forged = "attacker.example; dkim=pass header.d=example.test; dmarc=pass; spf=pass"
    verdicts = read_verdicts([ar(OPENDKIM_FAIL), ar(forged), FROM], RECEIVER)
    assert verdicts.result("dkim") == "fail"
    assert verdicts.result("dmarc") == "none"
    assert verdicts.result("spf") == "none"
    assert verdicts.ignored == 1


def test_our_authserv_id_below_a_foreign_header_is_a_forgery() -> None:
    # The sender wrote a header naming the receiver, then a hop on the way
    # (another verifier) added its own above it; the receiver's own is on top.
    forged_ours = "mail.example.test; dkim=pass header.d=example.test; dmarc=pass"
    verdicts = read_verdicts(
        [ar(OPENDKIM_FAIL), ar("relay.example; spf=pass"), ar(forged_ours), FROM], RECEIVER
    )
    assert verdicts.result("dkim") == "fail"
    assert verdicts.result("dmarc") == "none"
    assert verdicts.ignored == 2
    assert any("below another authserv-id" in note for note in verdicts.notes)


def test_without_an_authserv_id_nothing_is_believed() -> None:
    verdicts = read_verdicts([ar(OPENDKIM_GOOD), ar(OPENDMARC)], None)
    assert verdicts.results == ()
    assert verdicts.ignored == 2
    assert verdicts.result("dkim") == "none"


@pytest.mark.parametrize(
    ("value", "authserv", "expected"),
    [
        (GMAIL, "mx.google.com", {"dkim": "pass", "spf": "pass", "dmarc": "pass", "arc": "none"}),
        (
            MICROSOFT,
            "mx.microsoft.com",
            {"dkim": "pass", "spf": "pass", "dmarc": "pass", "arc": "none"},
        ),
        (
            "mx.example.net; arc=pass (i=1) smtp.remote-ip=192.0.2.1; dmarc=fail (p=reject) "
            "header.from=example.test; spf=softfail smtp.mailfrom=example.test",
            "mx.example.net",
            {"dkim": "none", "spf": "softfail", "dmarc": "fail", "arc": "pass"},
        ),
        ("mx.example.net 1; none", "mx.example.net", {"dkim": "none", "spf": "none"}),
    ],
)
def test_real_world_headers(value: str, authserv: str, expected: dict[str, str]) -> None:
    verdicts = read_verdicts([ar(value)], authserv)
    assert {method: verdicts.result(method) for method in expected} == expected


def test_an_aligned_dkim_pass_wins_over_others() -> None:
    headers = [
        ar(
            "mail.example.test; dkim=pass header.d=esp.example header.s=s1; "
            "dkim=fail header.d=example.test header.s=s2; "
            "dkim=pass header.d=mail.example.test header.s=s3"
        ),
        FROM,
    ]
    verdicts = read_verdicts(headers, RECEIVER)
    dkim = next(v for v in verdicts.results if v.method == "dkim")
    assert dkim.result == "pass"
    assert "header.d=mail.example.test" in dkim.detail
    assert "1 of 3 signatures" in dkim.detail


def test_an_aligned_dkim_failure_wins_over_a_foreign_pass() -> None:
    headers = [
        ar("mail.example.test; dkim=pass header.d=esp.example; dkim=fail header.d=example.test"),
        FROM,
    ]
    assert read_verdicts(headers, RECEIVER).result("dkim") == "fail"


def test_without_alignment_the_first_dkim_result_wins() -> None:
    headers = [ar("mail.example.test; dkim=neutral header.d=a.example; dkim=pass header.d=b.ex")]
    assert read_verdicts(headers, RECEIVER).result("dkim") == "neutral"


def test_the_topmost_result_wins_for_other_methods() -> None:
    headers = [ar("mail.example.test; spf=fail"), ar("mail.example.test; spf=pass")]
    assert read_verdicts(headers, RECEIVER).result("spf") == "fail"


def test_an_unparseable_header_of_ours_is_noted_not_fatal() -> None:
    verdicts = read_verdicts([ar("mail.example.test; dkim=;;"), ar(OPENDMARC)], RECEIVER)
    assert verdicts.result("dmarc") == "pass"
    assert verdicts.result("dkim") == "none"
    assert verdicts.ignored == 0
    assert any("unparseable Authentication-Results" in note for note in verdicts.notes)


def test_an_unparseable_foreign_header_is_ignored() -> None:
    verdicts = read_verdicts([ar("spf=pass smtp.mailfrom=x; dkim=pass")], RECEIVER)
    assert verdicts.ignored == 1
    assert verdicts.results == ()


@pytest.mark.parametrize(
    ("header", "value", "score", "threshold"),
    [
        (
            "X-Spamd-Result",
            "default: False [2.40 / 15.00]; R_SPF_ALLOW(-0.20)[+ip4:192.0.2.1]; "
            "DKIM_TRACE(0.00)[example.test:+]",
            2.4,
            15.0,
        ),
        ("X-Spamd-Result", "default: True [-1.10 / 6.00]", -1.1, 6.0),
        ("X-Rspamd-Score", "3.25", 3.25, None),
        (
            "X-Spam-Status",
            "No, score=1.2 required=5.0 tests=DKIM_SIGNED,DKIM_VALID autolearn=ham "
            "autolearn_force=no version=4.0.0",
            1.2,
            5.0,
        ),
        ("X-Spam-Status", "Yes, hits=7.5 required=5.0 tests=BAYES_99", 7.5, 5.0),
        ("X-Spam-Score", "0.4", 0.4, None),
        ("X-Spam-Score", "4.5 / 5.0", 4.5, 5.0),
    ],
)
def test_spam_scores(header: str, value: str, score: float, threshold: float | None) -> None:
    verdicts = read_verdicts([(header, value)], RECEIVER)
    assert verdicts.spam_score == score
    assert verdicts.spam_threshold == threshold
    assert verdicts.spam_source == header


def test_rspamd_wins_over_spamassassin_and_the_topmost_counts() -> None:
    verdicts = read_verdicts(
        [
            ("X-Spam-Status", "No, score=9.9 required=5.0"),
            ("X-Spamd-Result", "default: False [1.00 / 15.00]"),
            ("X-Spamd-Result", "default: False [0.00 / 99.00]"),  # the sender's, below
        ],
        RECEIVER,
    )
    assert (verdicts.spam_score, verdicts.spam_threshold) == (1.0, 15.0)
    assert verdicts.spam_source == "X-Spamd-Result"


def test_an_unparseable_spam_header_is_noted_and_the_next_kind_read() -> None:
    verdicts = read_verdicts(
        [("X-Spamd-Result", "garbage"), ("X-Spam-Status", "No, score=0.1 required=5.0")],
        RECEIVER,
    )
    assert verdicts.spam_score == 0.1
    assert verdicts.spam_source == "X-Spam-Status"
    assert any("unparseable X-Spamd-Result" in note for note in verdicts.notes)


def test_no_headers_no_verdicts() -> None:
    verdicts = read_verdicts([], RECEIVER)
    assert verdicts == Verdicts(authserv_id=RECEIVER)


def test_misses_names_each_method_with_what_was_expected() -> None:
    verdicts = Verdicts(RECEIVER, results=(AuthVerdict("dkim", "fail"), AuthVerdict("spf", "pass")))
    expected = (("dkim", "pass"), ("dmarc", "pass"), ("spf", "pass"), ("spf", "neutral"))
    assert misses(verdicts, expected) == ["dkim=fail (expected pass)", "dmarc=none (expected pass)"]
    assert misses(verdicts, (("spf", "neutral"), ("spf", "pass"))) == []
    assert misses(None, (("arc", "pass"),)) == ["arc=none (expected pass)"]


def test_metric_results_are_bounded() -> None:
    assert metric_result("dkim", "pass") == "pass"
    assert metric_result("arc", "softfail") == "other"
    assert metric_result("dkim", "x" * 300) == "other"


def test_describe_shows_results_ignored_score_and_notes() -> None:
    verdicts = read_verdicts(
        [
            ar(OPENDKIM_GOOD),
            ar("evil.example; dkim=pass"),
            ("X-Spam-Status", "No, score=1.2 required=5.0"),
            ("X-Spamd-Result", "oops"),
        ],
        RECEIVER,
    )
    text = "\n".join(describe(verdicts))
    assert "verify: mail.example.test: dkim=pass (header.d=example.test" in text
    assert "ignored 1 Authentication-Results header(s)" in text
    assert "spam score 1.2 of 5 (X-Spam-Status)" in text
    assert "unparseable X-Spamd-Result" in text


def test_a_from_of_nested_comments_is_no_domain_not_a_crash() -> None:
    # Found by tests/property: the stdlib's parseaddr recursed once per "(",
    # and the RecursionError killed the watcher thread reading the verdicts.
    verdicts = read_verdicts(
        [
            ("Authentication-Results", "mx.example.test; dkim=pass header.d=example.test"),
            ("Authentication-Results", "mx.example.test; dkim=fail header.d=other.test"),
            ("From", "(" * 50_000 + "x@example.test"),
        ],
        "mx.example.test",
    )
    assert [(v.method, v.result) for v in verdicts.results] == [("dkim", "pass")]
