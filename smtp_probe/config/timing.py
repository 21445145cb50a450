"""A probe's interval, timeout and jitter: written values checked, inherited ones fitted.

A probe's ``timeout`` and ``jitter`` default to the ``defaults`` section but
are fitted to the probe's interval: an inherited timeout is capped at the
interval and an inherited jitter at half of it, so a probe that only sets
``interval: 30s`` is valid. Values written in the probe itself are checked
instead: a timeout longer than the interval (runs would overlap) or a jitter
not shorter than it is an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from smtp_probe.config.values import format_seconds


@dataclass(frozen=True, slots=True)
class Timing:
    """When a probe runs and how long a run may take, in seconds."""

    interval: float
    timeout: float
    jitter: float


def check(
    interval: float, timeout: float | None, jitter: float | None
) -> Iterator[tuple[tuple[str], str]]:
    """What is wrong with a written ``timeout`` or ``jitter`` for ``interval``, by key.

    ``None`` means not written (or already reported as bad): nothing to check.
    """
    if timeout is not None and timeout > interval:
        yield (
            ("timeout",),
            f"{format_seconds(timeout)} is longer than the interval "
            f"{format_seconds(interval)}; runs would overlap",
        )
    if jitter is not None and jitter >= interval:
        yield (
            ("jitter",),
            f"{format_seconds(jitter)} is not shorter than the interval {format_seconds(interval)}",
        )


def fit(
    interval: float,
    timeout: float | None,
    jitter: float | None,
    *,
    default_timeout: float,
    default_jitter: float,
) -> Timing:
    """The timing of a probe whose written values passed :func:`check`.

    ``None`` means not written in the probe: the default then applies,
    capped at the interval (timeout) or half of it (jitter).
    """
    return Timing(
        interval=interval,
        timeout=min(default_timeout, interval) if timeout is None else timeout,
        jitter=min(default_jitter, interval / 2) if jitter is None else jitter,
    )
