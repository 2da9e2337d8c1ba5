"""Fixtures shared by the repository's pytest suites."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
