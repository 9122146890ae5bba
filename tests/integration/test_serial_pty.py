"""The ``serial`` provider reading a real pseudo-terminal, as it would read /dev/serial0.

The test holds the master side of a pty and plays the reader: it writes RDM6300 frames
(or lines) there; the plugin opens the slave path with pyserial like any UART.
"""

from __future__ import annotations

import os
import queue
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from auth_module.plugins import serial_reader
from auth_module.plugins.base import PluginContext
from auth_module.plugins.serial_reader import SerialProvider, rdm6300_frame
from auth_module.types import AuthorizationType, IdTokenType, ProvidedIdToken

pytest.importorskip("serial")

pytestmark = pytest.mark.timeout(20)

WAIT = 5.0
CTX = PluginContext(base_dir=Path("."))


@dataclass
class Pty:
    master: int
    slave: int
    path: str

    def write(self, data: bytes) -> None:
        os.write(self.master, data)


@pytest.fixture
def pty() -> Iterator[Pty]:
    master, slave = os.openpty()
    tty.setraw(slave)  # as a UART: no line discipline, no echo
    yield Pty(master, slave, os.ttyname(slave))
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def started(options: dict[str, object]) -> tuple[SerialProvider, queue.Queue[ProvidedIdToken]]:
    provider = serial_reader.create(options, CTX)
    got: queue.Queue[ProvidedIdToken] = queue.Queue()
    provider.start(got.put)
    assert provider.connected.wait(WAIT), "the serial plugin did not open the pty"
    return provider, got


def test_rdm6300_frames_become_tokens(pty: Pty) -> None:
    provider, got = started({"port": pty.path, "protocol": "rdm6300"})
    try:
        pty.write(b"\x00\xffnoise" + rdm6300_frame("0A001B2C3D") + b"\r\n")
        first = got.get(timeout=WAIT)
        assert first.id_token.value == "0A001B2C3D"
        assert first.id_token.type == IdTokenType.ISO14443
        assert first.authorization_type == AuthorizationType.RFID

        # a bad checksum is dropped; the next good frame still comes through
        with capture_logs() as logs:
            pty.write(rdm6300_frame("1100A2B3C4", checksum=0x00) + rdm6300_frame("1100A2B3C4"))
            assert got.get(timeout=WAIT).id_token.value == "1100A2B3C4"
        assert provider.bad_frames == 1
        assert [e["event"] for e in logs if e["log_level"] == "warning"][0].count("checksum") == 1
    finally:
        provider.close()
    assert not provider._thread.is_alive()


def test_a_card_held_on_the_reader_is_one_swipe(pty: Pty) -> None:
    provider, got = started({"port": pty.path, "debounce_s": 2.0})
    try:
        pty.write(rdm6300_frame("0A001B2C3D") * 10)  # the RDM6300 repeats while the card is there
        pty.write(rdm6300_frame("1100A2B3C4"))        # then another card
        assert got.get(timeout=WAIT).id_token.value == "0A001B2C3D"
        assert got.get(timeout=WAIT).id_token.value == "1100A2B3C4"
        assert got.empty()
    finally:
        provider.close()


def test_lines_protocol_with_options(pty: Pty) -> None:
    provider, got = started({"port": pty.path, "protocol": "lines", "baudrate": 115200,
                             "token_type": "ISO15693", "authorization_type": "OCPP",
                             "debounce_s": 0})
    try:
        pty.write(b"04:a2:2b:1c\r\n\r\ne0040100123456\n")
        a, b = got.get(timeout=WAIT), got.get(timeout=WAIT)
        assert (a.id_token.value, b.id_token.value) == ("04A22B1C", "E0040100123456")
        assert a.id_token.type == IdTokenType.ISO15693
        assert a.authorization_type == AuthorizationType.OCPP
    finally:
        provider.close()


def test_a_missing_port_is_logged_once_and_opened_when_it_appears(tmp_path: Path,
                                                                  pty: Pty) -> None:
    link = tmp_path / "ttyRFID"  # like a udev symlink that appears when plugged in
    provider = serial_reader.create({"port": str(link)}, CTX)
    provider.retry_s = 0.05
    got: queue.Queue[ProvidedIdToken] = queue.Queue()
    with capture_logs() as logs:
        provider.start(got.put)
        try:
            assert not provider.connected.wait(0.3)
            link.symlink_to(pty.path)
            assert provider.connected.wait(WAIT)
            pty.write(rdm6300_frame("0A001B2C3D"))
            assert got.get(timeout=WAIT).id_token.value == "0A001B2C3D"
        finally:
            provider.close()
    problems = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert len(problems) == 1, problems
    assert f"cannot open {link}" in problems[0] and "\n" not in problems[0]
