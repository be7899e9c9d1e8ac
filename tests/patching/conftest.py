"""The synthetic installations (tests/patching/synthetic.py) as fixtures: one distribution, or three."""

from __future__ import annotations

import pytest

from tests.patching.synthetic import Env, MultiEnv


@pytest.fixture
def env(tmp_path) -> Env:
    return Env(tmp_path)


@pytest.fixture
def multi(tmp_path) -> MultiEnv:
    return MultiEnv(tmp_path)
