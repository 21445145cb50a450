"""Hypothesis settings for the property tests: one reproducible CI profile, one for digging.

``ci`` (the default) is derandomized, so a CI failure reproduces on any
machine, keeps no example database, and holds example counts low enough
that the whole property suite runs in well under a minute on a shared
2-core runner. ``HYPOTHESIS_PROFILE=deep`` runs many more random examples
(locally, when hunting for a bug). Per-example deadlines are generous for a
busy machine but far below what a pathological (super-linear) regex or
parser loop takes on the hostile sizes the tests feed; each test sets its
own where it feeds megabytes.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=40,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "deep",
    max_examples=2000,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
