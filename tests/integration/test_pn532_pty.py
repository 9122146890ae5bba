"""The ``pn532`` provider talking to an emulated PN532 board on a real pseudo-terminal.

The plugin opens the slave side with pyserial as it would open /dev/serial0; the emulator
(:mod:`.pn532_emulator`) holds the master side and answers frames like the board.
"""

from __future__ import annotations

import os
import queue
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from auth_module.plugins import pn532_reader
from auth_module.plugins.base import PluginContext
from auth_module.plugins.pn532_reader import Pn532Provider
from auth_module.types import AuthorizationType, IdTokenType, ProvidedIdToken

from .pn532_emulator import DESFIRE_10, MIFARE_CLASSIC, NTAG215, Pn532Emulator

pytest.importorskip("serial")

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0
CTX = PluginContext(base_dir=Path("."))


class Board:
    """A pty with the emulator on its master side."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.path = os.ttyname(self.slave)
        self.emulator = Pn532Emulator(self.master).start()
        self._plugged = True

    def unplug(self) -> None:
        if not self._plugged:
            return  # closing the fds twice could close someone else's
        self._plugged = False
        self.emulator.stop()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def board() -> Iterator[Board]:
    b = Board()
    yield b
    b.unplug()


def started(port: str, **options: object) -> tuple[Pn532Provider, queue.Queue[ProvidedIdToken]]:
    provider = pn532_reader.create({"port": port, **options}, CTX)
    provider.poll_s = 0.02
    provider.retry_s = 0.05
    provider.retry_max_s = 0.4
    got: queue.Queue[ProvidedIdToken] = queue.Queue()
    provider.start(got.put)
    return provider, got


def warnings(logs: list[dict[str, object]]) -> list[str]:
    return [str(e["event"]) for e in logs if e["log_level"] == "warning"]


def test_cards_with_4_7_and_10_byte_uids(board: Board) -> None:
    provider, got = started(board.path, debounce_s=0.3)
    try:
        assert provider.connected.wait(WAIT), "the provider did not initialise the board"
        assert provider.firmware == "PN532 v1.6"
        assert board.emulator.commands[:3] == [0x14, 0x02, 0x32]  # SAM first, as the board needs
        health = provider.health()
        assert (health.kind, health.connected) == ("pn532", True)
        assert "PN532 v1.6" in health.detail

        for card, uid in [(MIFARE_CLASSIC, "A1B2C3D4"), (NTAG215, "04A1B2C3D4E5F6"),
                          (DESFIRE_10, "04112233445566778899")]:
            board.emulator.card = card
            token = got.get(timeout=WAIT)
            assert token.id_token.value == uid
            assert token.id_token.type == IdTokenType.ISO14443
            assert token.authorization_type == AuthorizationType.RFID
            board.emulator.wait_polls(5)   # held on the reader: polled again and again...
            assert got.empty()             # ...and still one token
            board.emulator.card = None
            board.emulator.wait_polls(20)  # taken away for longer than the debounce
        # presented again: a new token
        board.emulator.card = MIFARE_CLASSIC
        assert got.get(timeout=WAIT).id_token.value == "A1B2C3D4"
    finally:
        provider.close()
    assert provider._thread is not None and not provider._thread.is_alive()


@pytest.mark.parametrize("fault", ["bad_dcs", "bad_lcs", "lost"])
def test_a_bad_frame_or_a_lost_command_is_one_line_and_a_new_initialisation(
        board: Board, fault: str) -> None:
    with capture_logs() as logs:
        provider, got = started(board.path, debounce_s=0)
        try:
            assert provider.connected.wait(WAIT)
            board.emulator.wait_polls(2)
            sams = board.emulator.sam_count
            board.emulator.fault(fault)
            board.emulator.wait_polls(3)
            board.emulator.card = NTAG215
            assert got.get(timeout=WAIT).id_token.value == "04A1B2C3D4E5F6"
            assert board.emulator.sam_count == sams + 1
            assert provider.reinitialised == 1
            assert provider.health().connected
        finally:
            provider.close()
    [line] = warnings(logs)
    expected = {"bad_dcs": "data checksum", "bad_lcs": "length checksum", "lost": "no ACK"}
    assert expected[fault] in line and "initialising it again" in line and "\n" not in line
    assert any("is back" in str(e["event"]) for e in logs)


def test_an_answer_without_its_ack_is_taken(board: Board) -> None:
    with capture_logs() as logs:
        provider, got = started(board.path)
        try:
            assert provider.connected.wait(WAIT)
            board.emulator.card = MIFARE_CLASSIC
            board.emulator.fault("no_ack", "no_ack")
            assert got.get(timeout=WAIT).id_token.value == "A1B2C3D4"
            board.emulator.wait_polls(3)
        finally:
            provider.close()
    assert warnings(logs) == [] and provider.reinitialised == 0


def test_a_board_that_resets_is_woken_and_configured_again(board: Board) -> None:
    with capture_logs() as logs:
        provider, got = started(board.path)
        try:
            assert provider.connected.wait(WAIT)
            board.emulator.wait_polls(2)
            board.emulator.reset()  # boot noise, then deaf until woken up
            board.emulator.card = MIFARE_CLASSIC
            assert got.get(timeout=WAIT).id_token.value == "A1B2C3D4"
            assert board.emulator.sam_count == 2
        finally:
            provider.close()
    lines = warnings(logs)
    assert len(lines) == 1, lines
    assert "initialising it again" in lines[0]


def test_a_card_held_through_a_board_reset_is_still_one_token(board: Board) -> None:
    provider, got = started(board.path)  # default debounce: 2 s
    try:
        board.emulator.card = NTAG215
        assert got.get(timeout=WAIT).id_token.value == "04A1B2C3D4E5F6"
        board.emulator.reset()
        board.emulator.wait_polls(5)
        assert provider.reinitialised == 1 and got.empty()
    finally:
        provider.close()


def test_a_silent_port_and_an_unplugged_board_are_reported_and_retried(tmp_path: Path) -> None:
    link = tmp_path / "ttyPN532"  # like a udev symlink of a USB-UART adapter
    silent = Board()
    silent.emulator.stop()        # a port with nothing answering on it
    link.symlink_to(silent.path)
    with capture_logs() as logs:
        provider, got = started(str(link))
        try:
            assert not provider.connected.wait(1.0)
            assert not provider.health().connected
            assert "no PN532 answering" in provider.health().detail
            silent.unplug()
            link.unlink()

            board = Board()       # plugged in (again), a board on it this time
            link.symlink_to(board.path)
            try:
                assert provider.connected.wait(WAIT)
                board.emulator.card = MIFARE_CLASSIC
                assert got.get(timeout=WAIT).id_token.value == "A1B2C3D4"
                first_since = provider.health().since

                board.unplug()    # pulled out while polling
                link.unlink()
                deadline = WAIT
                while provider.connected.is_set() and deadline > 0:
                    provider.stopping.wait(0.05)
                    deadline -= 0.05
                assert not provider.health().connected
                assert provider.health().since >= first_since
                while "cannot open" not in provider.health().detail and deadline > 0:
                    provider.stopping.wait(0.05)  # the port gone: reopening is retried
                    deadline -= 0.05
            finally:
                board.unplug()
        finally:
            provider.close()
    lines = warnings(logs)
    # once for the silent port, once for the missing port, and the unplugging: each a line
    assert any("no PN532 answering" in w for w in lines)
    assert any("cannot open" in w for w in lines), lines
    # one line per incident, not one per attempt (there were dozens of attempts)
    assert len(lines) <= 5, "\n".join(lines)
    assert all("\n" not in w for w in lines)
    assert any("is back" in str(e["event"]) for e in logs)
    assert provider._thread is not None and not provider._thread.is_alive()


def test_a_board_that_keeps_failing_its_polls_is_one_line_and_paced(board: Board) -> None:
    with capture_logs() as logs:
        provider, got = started(board.path)
        try:
            assert provider.connected.wait(WAIT)
            board.emulator.corrupt_polls = True  # set-up still answered, polls never
            deadline = WAIT
            while provider.reinitialised < 4 and deadline > 0:
                provider.stopping.wait(0.05)
                deadline -= 0.05
            assert provider.reinitialised >= 4
            assert not provider.health().connected
            board.emulator.corrupt_polls = False  # the line is good again
            board.emulator.card = MIFARE_CLASSIC
            assert got.get(timeout=WAIT).id_token.value == "A1B2C3D4"
            assert provider.health().connected
        finally:
            provider.close()
    lines = warnings(logs)
    assert len(lines) == 1, lines  # the same failure again and again is said once
    assert len([e for e in logs if "is back" in str(e["event"])]) == 1
    # paced by back-off (0.05, 0.1, 0.2, 0.4 s ...), not initialised in a tight loop
    assert board.emulator.sam_count < 20
