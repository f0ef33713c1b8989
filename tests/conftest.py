"""Settings shared by the whole suite."""

from hypothesis import HealthCheck, settings

# CI machines have 2 cores shared with real Krita/GIMP runs: timing-based
# hypothesis checks would fail on load, not on bugs.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")
