"""Hypothesis profiles: `ci` runs the example counts the tests name, `dev` a fifth of them (HYPOTHESIS_PROFILE)."""

import os

from hypothesis import HealthCheck, settings

# Fixtures are function-scoped on purpose (a fresh app per example costs too much); inputs may be big.
SUPPRESSED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
              HealthCheck.large_base_example]
DEV_SHARE = 5

settings.register_profile("ci", deadline=None, database=None, suppress_health_check=SUPPRESSED)
settings.register_profile("dev", parent=settings.get_profile("ci"))


def load():
    """Load the profile named by HYPOTHESIS_PROFILE (default `ci`: the full counts)."""
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(n):
    """`n` examples under `ci`; a fifth (at least 10) under `dev`."""
    if settings.get_current_profile_name() == "dev":
        return max(10, n // DEV_SHARE)
    return n


def fuzz_settings(n):
    """The settings decorator for a property test whose full run is `n` examples."""
    return settings(max_examples=examples(n))
