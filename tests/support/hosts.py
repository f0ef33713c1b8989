"""Policy for tests that need a real host program (Krita, GIMP).

On a developer's machine without the host they skip with the reason; in CI
(CI=true) a missing host is a failure, so real-host tests can never be skipped
silently there.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_host(available: bool, why_missing: str) -> None:
    """Call at the start of a real-host test or fixture."""
    if available:
        return
    if in_ci():
        pytest.fail(f"CI must run the real-host tests, but {why_missing}")
    pytest.skip(why_missing)
