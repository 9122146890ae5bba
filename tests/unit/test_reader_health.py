"""``health()`` of the reader providers and the back-off of their reopening (no devices)."""

from __future__ import annotations

import queue
import threading

import pytest

from auth_module.plugins.base import ReaderHealth
from auth_module.plugins.loader import GuardedProvider
from auth_module.plugins.providers import ProviderOptions, ReaderProvider

pytestmark = pytest.mark.timeout(10)


class RecordingEvent(threading.Event):
    """The provider's ``stopping``: records how long each retry waits."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: queue.Queue[float] = queue.Queue()

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.waits.put(timeout)
        return super().wait(timeout)


class Flaky(ReaderProvider):
    """Fails ``failures`` times, then is open until told to fail again."""

    kind = "test"

    def __init__(self, failures: int) -> None:
        super().__init__("flaky", ProviderOptions())
        self.failures = failures
        self.stopping = RecordingEvent()
        self.waits = self.stopping.waits
        self.unplug = threading.Event()

    def read_loop(self) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("cannot open /dev/flaky: No such device")
        self.opened("/dev/flaky")
        self.unplug.wait()
        self.unplug.clear()
        raise OSError("read failed: I/O error")


def test_health_follows_the_device_and_reopening_backs_off() -> None:
    provider = Flaky(failures=4)
    provider.retry_s, provider.retry_max_s = 0.001, 0.004
    start = provider.health()
    assert start == ReaderHealth("flaky", "test", False, "starting", start.since)
    assert provider.waits.empty()
    provider.start(lambda t: None)
    try:
        waits = [provider.waits.get(timeout=5) for _ in range(4)]
        assert waits == [0.001, 0.002, 0.004, 0.004]  # doubles up to retry_max_s
        assert provider.connected.wait(5)
        up = provider.health()
        assert up.connected and up.detail == "reading /dev/flaky" and up.since >= start.since
        provider.unplug.set()
        assert provider.waits.get(timeout=5) == 0.001  # after a good open: from the start
        assert provider.connected.wait(5)
    finally:
        provider.failures = 10**6
        provider.stopping.set()
        provider.unplug.set()
        provider.close()


def test_health_of_a_failing_reader_says_why() -> None:
    provider = Flaky(failures=1000)
    provider.retry_s = provider.retry_max_s = 0.001
    provider.start(lambda t: None)
    try:
        provider.waits.get(timeout=5)
        provider.waits.get(timeout=5)
        health = provider.health()
        assert not health.connected
        assert health.detail == "OSError: cannot open /dev/flaky: No such device"
    finally:
        provider.close()


def test_guarded_provider_passes_health_on() -> None:
    provider = Flaky(failures=0)
    assert GuardedProvider(provider, "flaky").health() == provider.health()

    class NoHealth:
        name = "x"

        def start(self, on_token: object) -> None: ...

        def close(self) -> None: ...

    class BadHealth(NoHealth):
        def health(self) -> ReaderHealth:
            raise RuntimeError("boom")

    assert GuardedProvider(NoHealth(), "x").health() is None
    assert GuardedProvider(BadHealth(), "x").health() is None
