"""Fixtures of the end-to-end tests beyond the suite's own (tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.e2e.teams import team_groups


@pytest.fixture
def groups():
    """The groups of dags/dingbot_teams.py's teams, by robot Connection id, and ``legacy``."""
    with team_groups() as robots:
        yield robots
