"""Shared fixtures for tests against a real mosquitto."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulators.broker import Mosquitto


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    """A fresh mosquitto on a free loopback port, stopped and removed after the test."""
    with Mosquitto() as b:
        yield b
