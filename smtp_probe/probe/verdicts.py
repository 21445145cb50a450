"""What the receiving side said about our arrived message: authentication results and spam score.

:func:`read_verdicts` turns the header fields the watcher fetched (in
message order, newest first) into a :class:`~smtp_probe.probe.result.Verdicts`.

``Authentication-Results`` (RFC 8601) is parsed with ``authres``, and only
headers whose authserv-id is the mailbox's ``authserv_id`` (compared
case-insensitively) are believed: anybody can write an
``Authentication-Results`` header into a message they send, so one naming
another authserv-id proves nothing (RFC 8601 §5) and is only counted in
``ignored``. One more rule narrows what is believed: a header naming our
authserv-id that sits *below* a header of another authserv-id was in the
message before that other verifier saw it, so before it reached the
receiver: a forgery (RFC 8601 §5 asks receivers to remove those; not all
do), ignored and noted. Other header fields between believed headers do not
matter (the receiving side's hops add ``Received`` lines between its
filters' results).

Several results for one method: for ``dkim`` a ``pass`` whose ``header.d``
aligns with the ``From`` domain wins (the signature DMARC cares about),
else the first result aligned with it, else the first result; for the
others the topmost (newest) result wins. A method without a result is
``none``, never ``pass``.

Spam scores come from the topmost header of the first kind present, in this
order: rspamd's ``X-Spamd-Result`` (``default: False [2.40 / 15.00]; ...``,
score and threshold), rspamd's ``X-Rspamd-Score`` (score only),
SpamAssassin's ``X-Spam-Status`` (``No, score=1.2 required=5.0 ...``) and a
bare ``X-Spam-Score`` (``1.2``, or ``1.2 / 5.0``). These headers carry no
authserv-id: the topmost is the one the last filter wrote.

Nothing here raises on a bad header: what cannot be read is noted in
``Verdicts.notes`` and the run goes on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from smtp_probe.probe.result import AuthVerdict, Verdicts

AUTH_RESULTS: Final = "Authentication-Results"
SPAM_HEADERS: Final = ("X-Spamd-Result", "X-Rspamd-Score", "X-Spam-Status", "X-Spam-Score")
"""Where spam scores are read from, in order of preference."""
VERDICT_HEADERS: Final = (AUTH_RESULTS, *SPAM_HEADERS, "From")
"""The header fields :func:`read_verdicts` needs fetched (``From``: the DKIM alignment)."""

METHODS: Final = ("spf", "dkim", "dmarc", "arc")
"""The methods reported as metrics and accepted in ``expect_auth``."""
RESULTS: Final = {
    # RFC 8601 §2.7.1 (dkim), §2.7.2 (spf), RFC 7489 §11.2 (dmarc), RFC 8617 §4.2 (arc).
    "dkim": ("none", "pass", "fail", "policy", "neutral", "temperror", "permerror"),
    "spf": ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror", "policy"),
    "dmarc": ("none", "pass", "fail", "temperror", "permerror"),
    "arc": ("none", "pass", "fail"),
}
"""The results each method can have: ``expect_auth`` values and metric label values."""
OTHER_RESULT: Final = "other"
"""A result outside :data:`RESULTS` (a receiver's own word), as a metric label."""

_MAX_DETAIL: Final = 200
_LEADING_ID: Final = re.compile(r"\s*(?:\([^)]*\)\s*)*([^\s;()]+)")
_SPAMD_SCORE: Final = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)\s*\]")
_NUMBER: Final = r"(-?\d+(?:\.\d+)?)"
_SA_SCORE: Final = re.compile(rf"\b(?:score|hits)\s*=\s*{_NUMBER}", re.IGNORECASE)
_SA_REQUIRED: Final = re.compile(rf"\brequired\s*=\s*{_NUMBER}", re.IGNORECASE)
_BARE_SCORE: Final = re.compile(rf"^\s*{_NUMBER}\s*(?:/\s*{_NUMBER}\s*)?(?:$|[\s;(])")


def read_verdicts(headers: Iterable[tuple[str, str]], authserv_id: str | None) -> Verdicts:
    """The verdicts in ``headers`` (name, value) of one message, topmost first.

    ``authserv_id`` is the receiving side's; ``None`` believes no
    ``Authentication-Results`` header at all (all are counted as ignored).
    Never raises: unreadable headers become notes.
    """
    fields = [(name.strip().lower(), _unfold(value)) for name, value in headers]
    notes: list[str] = []
    from_domain = next((_address_domain(v) for n, v in fields if n == "from"), None)
    believed, ignored = _believed_results(
        [v for n, v in fields if n == AUTH_RESULTS.lower()], authserv_id, notes
    )
    score, threshold, source = _spam_score(fields, notes)
    return Verdicts(
        authserv_id=authserv_id,
        results=_winners(believed, from_domain),
        ignored=ignored,
        spam_score=score,
        spam_threshold=threshold,
        spam_source=source,
        notes=tuple(notes),
    )


def metric_result(method: str, result: str) -> str:
    """``result`` as a bounded metric label value: a known result of ``method``, else ``other``."""
    return result if result in RESULTS.get(method, ()) else OTHER_RESULT


def misses(verdicts: Verdicts | None, expected: Sequence[tuple[str, str]]) -> list[str]:
    """What ``verdicts`` lacks of ``expected`` (method, accepted result) pairs, one entry per method.

    Each entry reads ``dkim=fail (expected pass)`` (several accepted
    results: ``expected pass or neutral``); empty when every method has an
    accepted result. Without verdicts every method is ``none``.
    """
    accepted: dict[str, list[str]] = {}
    for method, result in expected:
        accepted.setdefault(method, []).append(result)
    found = []
    for method, results in accepted.items():
        got = verdicts.result(method) if verdicts is not None else "none"
        if got not in results:
            found.append(f"{method}={got} (expected {' or '.join(results)})")
    return found


def describe(verdicts: Verdicts) -> list[str]:
    """Transcript lines about ``verdicts``: results, what was ignored, score, own DKIM, notes."""
    lines = []
    who = verdicts.authserv_id or "(no authserv_id configured)"
    if verdicts.results:
        for verdict in verdicts.results:
            detail = f" ({verdict.detail})" if verdict.detail else ""
            lines.append(f"verify: {who}: {verdict.method}={verdict.result}{detail}")
    else:
        lines.append(f"verify: {who}: no authentication results")
    if verdicts.ignored:
        lines.append(
            f"verify: ignored {verdicts.ignored} Authentication-Results header(s) "
            "not written by the receiver (another authserv-id, or below one)"
        )
    if verdicts.own_dkim is not None:
        own = verdicts.own_dkim
        detail = f" ({own.detail})" if own.detail else ""
        lines.append(f"verify: own DKIM check: dkim={own.result}{detail}")
    if verdicts.spam_score is not None:
        of = f" of {verdicts.spam_threshold:g}" if verdicts.spam_threshold is not None else ""
        lines.append(f"verify: spam score {verdicts.spam_score:g}{of} ({verdicts.spam_source})")
    lines.extend(f"verify: {note}" for note in verdicts.notes)
    return lines


# ------------------------------------------------------------ Authentication-Results


def _believed_results(
    values: Sequence[str], authserv_id: str | None, notes: list[str]
) -> tuple[list[AuthVerdict], int]:
    """The results of the believed headers, topmost first, and how many headers were ignored."""
    if not values:
        return [], 0
    import authres  # here: only a run that found an A-R header pays for the parser

    context = authres.all_features()
    ours = authserv_id.lower() if authserv_id else None
    believed: list[AuthVerdict] = []
    ignored = 0
    below_foreign = False
    for value in values:
        try:
            parsed = context.parse_value(value)
        # Its own errors, and anything else a hostile header may provoke: this
        # runs in the watcher thread, which must never die of a message.
        except Exception as exc:  # noqa: BLE001
            leading = _LEADING_ID.match(value)
            if ours is not None and leading is not None and leading.group(1).lower() == ours:
                notes.append(f"unparseable Authentication-Results from {authserv_id}: {exc}")
            else:
                ignored += 1
                below_foreign = True
            continue
        if ours is None or str(parsed.authserv_id).lower() != ours:
            ignored += 1
            below_foreign = True
            continue
        if below_foreign:
            ignored += 1
            notes.append(
                f"an Authentication-Results header of {authserv_id} below another "
                "authserv-id's was ignored: it was in the message before the receiver saw it"
            )
            continue
        for result in parsed.results:
            believed.append(_verdict(result))
    return believed, ignored


def _verdict(result: object) -> AuthVerdict:
    """One ``authres`` result as an :class:`AuthVerdict` with its properties as the detail."""
    method = str(getattr(result, "method", "")).lower()
    outcome = str(getattr(result, "result", "")).lower()
    parts = [
        f"{prop.type}.{prop.name}={prop.value}"
        for prop in getattr(result, "properties", ())
        if not (prop.type == "header" and prop.name == "b")  # a signature fragment says nothing
    ]
    reason = getattr(result, "reason", None)
    if reason:
        parts.append(f"reason={reason}")
    detail = " ".join(parts)
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 3] + "..."
    return AuthVerdict(method, outcome, detail)


def _winners(believed: Sequence[AuthVerdict], from_domain: str | None) -> tuple[AuthVerdict, ...]:
    """One result per method, in the order methods first appear (see the module docstring)."""
    by_method: dict[str, list[AuthVerdict]] = {}
    for verdict in believed:
        by_method.setdefault(verdict.method, []).append(verdict)
    chosen = []
    for method, verdicts in by_method.items():
        if method == "dkim" and len(verdicts) > 1:
            aligned = [v for v in verdicts if _aligned(_property(v, "header.d"), from_domain)]
            passed = [v for v in aligned if v.result == "pass"]
            best = (passed or aligned or verdicts)[0]
            chosen.append(
                AuthVerdict(
                    best.method,
                    best.result,
                    f"{best.detail} (1 of {len(verdicts)} signatures)".lstrip(),
                )
            )
        else:
            chosen.append(verdicts[0])
    return tuple(chosen)


def _property(verdict: AuthVerdict, name: str) -> str | None:
    for part in verdict.detail.split():
        key, _, value = part.partition("=")
        if key == name:
            return value
    return None


def _aligned(domain: str | None, from_domain: str | None) -> bool:
    """Relaxed alignment, roughly (RFC 7489 §3.1): one domain is the other or under it."""
    if not domain or not from_domain:
        return False
    a, b = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    return a == b or a.endswith(f".{b}") or b.endswith(f".{a}")


def _address_domain(value: str) -> str | None:
    """The domain of the address in a ``From`` value; ``None`` when there is none or it won't parse."""
    import email.utils  # here: the module is cheap, but only verdict reading needs it

    try:
        _, address = email.utils.parseaddr(value)
    # The stdlib reads nested comments recursively: a From of a few thousand
    # "(" (anyone can send one) exhausts the stack, in the watcher thread.
    except RecursionError:
        return None
    domain = address.rpartition("@")[2]
    return domain.lower() if "@" in address and domain else None


# ------------------------------------------------------------------------------ spam


def _spam_score(
    fields: Sequence[tuple[str, str]], notes: list[str]
) -> tuple[float | None, float | None, str | None]:
    """Score, threshold and source header of the first spam header kind present."""
    for header in SPAM_HEADERS:
        value = next((v for n, v in fields if n == header.lower()), None)
        if value is None:
            continue
        parsed = _parse_spam(header, value)
        if parsed is None:
            notes.append(f"unparseable {header}: {value[:80]!r}")
            continue
        return parsed[0], parsed[1], header
    return None, None, None


def _parse_spam(header: str, value: str) -> tuple[float, float | None] | None:
    if header == "X-Spamd-Result":
        match = _SPAMD_SCORE.search(value)
        return (float(match.group(1)), float(match.group(2))) if match else None
    if header == "X-Spam-Status":
        score = _SA_SCORE.search(value)
        required = _SA_REQUIRED.search(value)
        if score is None:
            return None
        return float(score.group(1)), float(required.group(1)) if required else None
    bare = _BARE_SCORE.match(value)
    if bare is None:
        return None
    threshold = bare.group(2)
    return float(bare.group(1)), float(threshold) if threshold is not None else None


def _unfold(value: str) -> str:
    return " ".join(str(value).split())
