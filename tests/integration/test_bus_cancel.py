"""A blocking call ends at once when its stop signal is set: start-up waits without polling."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from auth_module.bus import BusClient, CallCancelled
from auth_module.stopping import StopSignal
from simulators.broker import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture
def caller(broker: Mosquitto) -> Iterator[BusClient]:
    bus = BusClient(module_id="caller", host=broker.host, port=broker.port, prefix="everest/")
    bus.start()
    assert bus.wait_connected(10.0)
    yield bus
    bus.stop()


def test_a_call_nobody_answers_ends_when_its_stop_signal_is_set(caller: BusClient) -> None:
    stop = StopSignal()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(CallCancelled):
        caller.call("nobody", "main", "get_evse", {}, timeout=20.0, cancel=stop)
    assert time.monotonic() - started < 10.0  # far below the call's own 20 s timeout
    assert caller._calls._pending == {}  # the one cleanup took it out of the map


def test_a_stop_signal_already_set_ends_the_call_at_once(caller: BusClient) -> None:
    stop = StopSignal()
    stop.set()
    with pytest.raises(CallCancelled):
        caller.call("nobody", "main", "get_evse", {}, timeout=20.0, cancel=stop)


def test_stop_signal_hooks_run_once_and_can_be_forgotten() -> None:
    stop = StopSignal()
    ran: list[str] = []
    stop.on_set(lambda: ran.append("a"))
    forget = stop.on_set(lambda: ran.append("b"))
    forget()
    stop.set()
    stop.set()
    assert ran == ["a"] and stop.is_set()
    stop.on_set(lambda: ran.append("late"))  # already set: runs at once
    assert ran == ["a", "late"]
