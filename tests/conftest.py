"""Fixtures for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """A test that configures logging (a CLI run in-process) must not leave a logger bound
    to pytest's captured stderr for the tests after it."""
    yield
    structlog.reset_defaults()
