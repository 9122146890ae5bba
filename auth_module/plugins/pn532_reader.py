"""Token provider ``pn532``: an NXP PN532 board on a UART (HSU, 115200 baud), reading
13.56 MHz ISO 14443A cards (MIFARE Classic, DESFire, NTAG; 4, 7 and 10-byte UIDs).

::

    - plugin: pn532
      port: /dev/serial0         # the Pi's UART (GPIO14/15), or a USB-UART adapter

The frame layer is our own (:mod:`.pn532_frames`) over pyserial (``pip install
'auth-module[serial]'``); the reasons are in the README. What the provider does:

1. opens the port and wakes the board (``55`` and zeros), sends ``SAMConfiguration``
   (normal mode: leaves the power-on sleep), asks ``GetFirmwareVersion`` (to know a PN532
   answers) and sets ``RFConfiguration`` MaxRetries so a poll without a card ends at once;
2. polls ``InListPassiveTarget`` (one target, 106 kbps type A) about five times a second;
   every UID read goes through the debounce of every provider, so a card held on the
   reader is one token and a card taken away and presented again later is a new one;
3. every frame's LCS and DCS are checked; each command waits for the ACK and for its
   answer within a timeout. A timeout, a bad checksum, garbage or an error frame while
   polling (a board that reset, a loose wire) is logged in one line and the board is
   initialised again at once (after a growing pause if it keeps failing); if that fails
   too, or the port fails (a USB adapter pulled out), the port is closed and reopened with
   back-off. The log says when it answers polls again.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import field_validator

from . import pn532_frames as pf
from .base import PluginContext
from .loader import register_options_model
from .providers import ProviderOptions, ReaderProvider
from .serial_reader import open_serial, require_pyserial

__all__ = ["Pn532Error", "Pn532Link", "Pn532Options", "Pn532Provider", "create"]

BAUDRATE = 115200


class Pn532Error(Exception):
    """The board did not answer as it should (timeout, bad frame, error frame)."""


@register_options_model
class Pn532Options(ProviderOptions):
    port: str

    @field_validator("port")
    @classmethod
    def _port(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a device path such as /dev/serial0")
        return value.strip()


class Pn532Link:
    """Commands and answers on an open serial port: the thin I/O around the frame codec.

    ``port`` is anything with pyserial's ``read(n)`` (returning within its timeout),
    ``write``, ``in_waiting`` and ``reset_input_buffer``.
    """

    ack_timeout_s = 0.3
    answer_timeout_s = 1.0

    def __init__(self, port: Any) -> None:
        self.port = port
        self.decoder = pf.FrameDecoder()

    def initialise(self) -> str:
        """Wake the board and configure it; returns its firmware (``PN532 v1.6``)."""
        self.port.write(pf.ACK)  # aborts a command the board may still be running
        self.port.reset_input_buffer()
        self.decoder = pf.FrameDecoder()
        self.port.write(pf.WAKE_UP)
        # normal mode, virtual-card timeout 1 s (0x14 * 50 ms), P70_IRQ used
        self.call(pf.SAM_CONFIGURATION, b"\x01\x14\x01")
        firmware = pf.parse_firmware(self.call(pf.GET_FIRMWARE_VERSION))
        # CfgItem 5 MaxRetries: MxRtyATR 0xFF, MxRtyPSL 1, MxRtyPassiveActivation 1
        self.call(pf.RF_CONFIGURATION, b"\x05\xff\x01\x01")
        return firmware

    def poll(self) -> pf.Target | None:
        """One InListPassiveTarget for one ISO 14443A target: the card, or None."""
        answer = self.call(pf.IN_LIST_PASSIVE_TARGET, b"\x01\x00")
        try:
            targets = pf.parse_targets(answer)
        except ValueError as exc:
            raise Pn532Error(str(exc)) from None
        return targets[0] if targets else None

    def call(self, command: int, params: bytes = b"") -> bytes:
        """Send ``command`` and return its answer's data after the answer code.

        The ACK is expected first; an answer that arrives without its ACK (the ACK was
        lost on the line) is taken all the same. Frames that answer something else are
        skipped; a NACK makes us send the command once more."""
        frame = pf.encode(command, params)
        self.port.write(frame)
        acked, resent = False, False
        deadline = time.monotonic() + self.ack_timeout_s
        while True:
            for got in self._frames(deadline):
                if isinstance(got, pf.Ack):
                    acked = True
                    deadline = time.monotonic() + self.answer_timeout_s
                elif isinstance(got, pf.Nack) and not resent:
                    resent = True
                    self.port.write(frame)
                elif isinstance(got, pf.BadFrame):
                    raise Pn532Error(f"{_NAMES.get(command, hex(command))}: {got.reason}")
                elif isinstance(got, pf.ErrorFrame):
                    raise Pn532Error(f"{_NAMES.get(command, hex(command))}: error frame")
                elif (isinstance(got, pf.Info) and got.tfi == pf.PN532
                      and got.command == command + 1):
                    return got.data[1:]
            if time.monotonic() >= deadline:
                what = "answer" if acked else "ACK"
                raise Pn532Error(f"no {what} to {_NAMES.get(command, hex(command))} within "
                                 f"{self.answer_timeout_s if acked else self.ack_timeout_s:g} s")

    def _frames(self, deadline: float) -> list[pf.Frame]:
        """The frames decoded from what arrives before ``deadline`` (at least one read)."""
        data = self.port.read(self.port.in_waiting or 1)
        frames = self.decoder.feed(data) if data else []
        while not frames and data and time.monotonic() < deadline and self.port.in_waiting:
            data = self.port.read(self.port.in_waiting)
            frames = self.decoder.feed(data)
        return frames


_NAMES = {pf.SAM_CONFIGURATION: "SAMConfiguration", pf.GET_FIRMWARE_VERSION: "GetFirmwareVersion",
          pf.RF_CONFIGURATION: "RFConfiguration",
          pf.IN_LIST_PASSIVE_TARGET: "InListPassiveTarget"}


class Pn532Provider(ReaderProvider):
    """Polls a PN532 on its own thread (see the module doc)."""

    kind = "pn532"
    #: seconds between two polls (a poll itself takes a few milliseconds on a real board)
    poll_s = 0.2
    read_timeout_s = 0.05
    #: a failure this soon after the last one waits (with back-off) before initialising
    stable_s = 10.0

    def __init__(self, options: Pn532Options, **kwargs: Any) -> None:
        super().__init__(f"pn532:{options.port}", options, **kwargs)
        self.options: Pn532Options = options
        #: the board's firmware once it answered (``PN532 v1.6``)
        self.firmware: str | None = None
        #: how many times the board was initialised again after a failure while polling
        self.reinitialised = 0

    def make_link(self, port: Any) -> Pn532Link:
        return Pn532Link(port)

    def read_loop(self) -> None:
        port = open_serial(self.options.port, BAUDRATE, self.read_timeout_s)
        try:
            link = self.make_link(port)
            try:
                self.firmware = link.initialise()
            except Pn532Error as exc:
                raise Pn532Error(f"no PN532 answering on {self.options.port} ({exc})") from None
            self._recover(link)
        finally:
            port.close()

    def _recover(self, link: Pn532Link) -> None:
        """Poll; after a failure log one line and initialise the board again at once, or
        after a growing pause if it failed again within ``stable_s`` (a board that
        answers its set-up but not its polls must not spin or flood the log)."""
        pause, last_failure = self.retry_s, -float("inf")
        while not self.stopping.is_set():
            try:
                self._poll_until_failure(link)
            except Pn532Error as exc:
                if self.stopping.is_set():
                    return
                self.lost(f"PN532 on {self.options.port}: {exc}; initialising it again")
                now = time.monotonic()
                if now - last_failure < self.stable_s:
                    self.stopping.wait(pause)
                    pause = min(pause * 2, self.retry_max_s)
                else:
                    pause = self.retry_s
                last_failure = now
                self.reinitialised += 1
                try:
                    self.firmware = link.initialise()
                except Pn532Error as again:
                    raise Pn532Error(f"PN532 on {self.options.port} does not answer "
                                     f"({again})") from None

    def _poll_until_failure(self, link: Pn532Link) -> None:
        while not self.stopping.is_set():
            target = link.poll()
            if not self.connected.is_set():  # it answers polls: open (or back)
                self.opened(f"{self.options.port} ({self.firmware})")
            if target is not None:
                self.emit(target.uid_hex)
            self.stopping.wait(self.poll_s)


def create(options: dict[str, Any], context: PluginContext) -> Pn532Provider:
    parsed = Pn532Options.model_validate(options)
    require_pyserial("pn532")
    return Pn532Provider(parsed)
