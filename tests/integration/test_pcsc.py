"""The ``pcsc`` provider on a real PC/SC stack: pyscard -> libpcsclite -> pcscd -> vpcd,
with our virtual card connecting to vpcd as a card placed on the reader (see pcsc_rig)."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from auth_module.plugins import pcsc_reader
from auth_module.plugins.base import PluginContext
from auth_module.plugins.pcsc_reader import PcscProvider
from auth_module.types import AuthorizationType, IdTokenType, ProvidedIdToken

from .pcsc_rig import Pcscd, VirtualCard

pytestmark = pytest.mark.timeout(60)

WAIT = 15.0
Make = Callable[..., tuple[PcscProvider, "queue.Queue[ProvidedIdToken]"]]
CTX = PluginContext(base_dir=Path("."))


def wait_for(what: Callable[[], bool], message: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.05)


@pytest.fixture
def provider_of() -> Iterator[Make]:
    made: list[PcscProvider] = []

    def make(**options: object) -> tuple[PcscProvider, queue.Queue[ProvidedIdToken]]:
        provider = pcsc_reader.create(dict(options), CTX)
        provider.retry_s = 0.1
        provider.retry_max_s = 0.5
        got: queue.Queue[ProvidedIdToken] = queue.Queue()
        provider.start(got.put)
        made.append(provider)
        return provider, got

    yield make
    for provider in made:
        provider.close()
        assert provider._thread is not None and not provider._thread.is_alive()


def test_a_card_placed_is_one_token_and_again_when_placed_again(pcscd: Pcscd,
                                                                provider_of: Make) -> None:
    provider, got = provider_of(debounce_s=0)
    assert provider.connected.wait(WAIT)
    assert provider.readers == pcscd.readers() and len(provider.readers) == 2
    health = provider.health()
    assert health.kind == "pcsc" and health.connected and "Virtual PCD" in health.detail

    for uid in ("A1B2C3D4", "04A1B2C3D4E5F6"):
        card = VirtualCard(pcscd.port, uid)
        with card:
            token = got.get(timeout=WAIT)
            assert token.id_token.value == uid
            assert token.id_token.type == IdTokenType.ISO14443
            assert token.authorization_type == AuthorizationType.RFID
            assert card.apdus == [bytes.fromhex("FFCA000000")]
            time.sleep(1.0)  # held on the reader: still one token
            assert got.empty()
        assert got.empty()

    # the same card taken away and placed again: read again (debounce off here)
    for _ in range(2):
        with VirtualCard(pcscd.port, "A1B2C3D4", slot=1):
            assert got.get(timeout=WAIT).id_token.value == "A1B2C3D4"


def test_reader_option_picks_the_reader_by_name(pcscd: Pcscd, provider_of: Make) -> None:
    provider, got = provider_of(reader="pcd 00 01")  # case-insensitive
    assert provider.connected.wait(WAIT)
    assert provider.readers == ["Virtual PCD 00 01"]
    ignored = VirtualCard(pcscd.port, "0BADCAFE", slot=0)
    with ignored:
        with VirtualCard(pcscd.port, "04A1B2C3D4E5F6", slot=1):
            assert got.get(timeout=WAIT).id_token.value == "04A1B2C3D4E5F6"
            time.sleep(0.5)
    assert got.empty() and ignored.apdus == []

    nobody, _ = provider_of(reader="ACR122")
    wait_for(lambda: "no PC/SC reader whose name contains 'ACR122'" in nobody.health().detail,
             "the provider to say it has no reader")
    assert not nobody.health().connected


class Refusing(VirtualCard):
    def answer(self, apdu: bytes) -> bytes:
        self.apdus.append(apdu)
        return b"\x6a\x81"  # function not supported


def test_a_card_without_uid_is_one_warning_and_no_token(pcscd: Pcscd, provider_of: Make) -> None:
    provider, got = provider_of()
    assert provider.connected.wait(WAIT)
    with capture_logs() as logs:
        card = Refusing(pcscd.port, "A1B2C3D4")
        with card:
            wait_for(lambda: bool(card.apdus), "the card to be asked for its UID")
            wait_for(lambda: any(e["log_level"] == "warning" for e in logs), "a warning")
    [line] = [str(e["event"]) for e in logs if e["log_level"] == "warning"]
    assert "gave no UID (GET DATA answered 6A81)" in line
    assert got.empty()


@pytest.mark.timeout(120)
def test_pcscd_gone_and_back(pcscd: Pcscd, provider_of: Make) -> None:
    if pcscd.system:
        pytest.skip("the pcscd here is the system's; the tests do not stop it")
    pcscd.stop()
    try:
        with capture_logs() as logs:
            provider, got = provider_of(debounce_s=0)
            wait_for(lambda: "cannot reach pcscd" in provider.health().detail,
                     "the provider to find no pcscd")
            pcscd.start()  # readers appear while the module runs
            assert provider.connected.wait(WAIT)
            with VirtualCard(pcscd.port, "A1B2C3D4"):
                assert got.get(timeout=WAIT).id_token.value == "A1B2C3D4"

            pcscd.stop()  # pcscd (and every reader with it) gone
            wait_for(lambda: not provider.health().connected, "the provider to notice")
            time.sleep(1.5)  # several attempts with back-off, logged once
            pcscd.start()
            wait_for(lambda: provider.health().connected, "the provider to be back")
            with VirtualCard(pcscd.port, "04A1B2C3D4E5F6", slot=1):
                assert got.get(timeout=WAIT).id_token.value == "04A1B2C3D4E5F6"
    finally:
        if pcscd.proc is None:
            pcscd.start()
    warnings = [str(e["event"]) for e in logs if e["log_level"] == "warning"]
    assert 2 <= len(warnings) <= 4, warnings  # once per incident, not once per attempt
    assert all("\n" not in w for w in warnings)
    backs = [e for e in logs if "is back" in str(e["event"])]
    assert len(backs) == 2
