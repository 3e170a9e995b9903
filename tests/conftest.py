"""Settings for the whole test suite."""

from __future__ import annotations

from hypothesis import settings

# Same examples on every run: a failure found in CI reproduces locally, and a green
# run stays green. No deadline: shared CI machines have noisy timings.
settings.register_profile("mongoreact", derandomize=True, deadline=None)
settings.load_profile("mongoreact")
