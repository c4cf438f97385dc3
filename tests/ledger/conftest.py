from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from tests.ledger.helpers import World, make_env

settings.register_profile(
    "ledger", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=40
)


@pytest.fixture
def world() -> World:
    """A world with signatures checked (the default for spec tests)."""
    return World(make_env())
