"""Shared fixtures for tests against a real mosquitto."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulators.broker import Mosquitto

from .pcsc_rig import Pcscd, PcscdUnusable, why_no_pcscd


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    """A fresh mosquitto on a free loopback port, stopped and removed after the test."""
    with Mosquitto() as b:
        yield b


@pytest.fixture(scope="session")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pcscd]:
    """pcscd with the two vpcd virtual readers, for the whole session (see pcsc_rig)."""
    reason = why_no_pcscd()
    if reason:
        pytest.skip(f"PC/SC tests need pcscd: {reason}")
    daemon = Pcscd(tmp_path_factory.mktemp("pcscd"))
    try:
        daemon.start()
    except PcscdUnusable as exc:
        daemon.close()
        pytest.skip(f"PC/SC tests need pcscd: {exc}")
    except BaseException:
        daemon.close()  # no pcscd left behind by a start that failed half-way
        raise
    yield daemon
    daemon.close()
