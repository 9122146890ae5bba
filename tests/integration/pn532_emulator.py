"""A PN532 board in HSU mode, emulated on the master side of a pseudo-terminal.

It speaks the frame protocol of NXP UM0701-02 §6.2 as a real board does: asleep after
power-on until the host sends the wake-up byte 0x55; an ACK for every command it
understood, then the answer (code + 1) in a normal information frame; an error frame for a
command it does not know. It answers SAMConfiguration, GetFirmwareVersion (PN532 v1.6),
RFConfiguration and InListPassiveTarget (106 kbps type A) with the card that is on it.

Faults for the tests (each applies once, in order): ``bad_dcs`` / ``bad_lcs`` corrupt the
next answer's data / length checksum, ``no_ack`` leaves out the next ACK (the answer still
comes), ``lost`` swallows the next command whole (no ACK, no answer); ``corrupt_polls``
corrupts every poll's answer until cleared. :meth:`reset` is a
board that resets: it prints boot noise and sleeps until woken up again.

Frames are built here by hand (not with the provider's encoder) so that the two sides do
not merely agree with themselves.
"""

from __future__ import annotations

import os
import select
import threading
from collections import deque
from dataclasses import dataclass

from auth_module.plugins.pn532_frames import FrameDecoder, Info


@dataclass(frozen=True)
class Card:
    uid: bytes
    sens_res: bytes = b"\x00\x04"
    sel_res: int = 0x08        # MIFARE Classic 1K
    ats: bytes = b""           # with sel_res 0x20 (ISO 14443-4): first byte counts itself


MIFARE_CLASSIC = Card(bytes.fromhex("A1B2C3D4"))
NTAG215 = Card(bytes.fromhex("04A1B2C3D4E5F6"), sens_res=b"\x00\x44", sel_res=0x00)
DESFIRE_10 = Card(bytes.fromhex("04112233445566778899"), sens_res=b"\x03\x44", sel_res=0x20,
                  ats=bytes.fromhex("067577810280"))


def answer_frame(code: int, data: bytes, *, bad_lcs: bool = False, bad_dcs: bool = False) -> bytes:
    body = bytes([0xD5, code]) + data
    length = len(body)
    lcs = (0x100 - length) & 0xFF
    dcs = (0x100 - (sum(body) & 0xFF)) & 0xFF
    if bad_lcs:
        lcs ^= 0x5A
    if bad_dcs:
        dcs ^= 0x01
    return b"\x00\x00\xff" + bytes([length, lcs]) + body + bytes([dcs, 0x00])


ACK_FRAME = b"\x00\x00\xff\x00\xff\x00"
ERROR_FRAME = b"\x00\x00\xff\x01\xff\x7f\x81\x00"


class Pn532Emulator:
    def __init__(self, master: int) -> None:
        self.master = master
        self.card: Card | None = None
        self.faults: deque[str] = deque()
        #: corrupt every InListPassiveTarget answer (a board that sets up but cannot poll)
        self.corrupt_polls = False
        self.awake = False
        self.configured = False
        self.commands: list[int] = []
        self.polls = 0
        self.sam_count = 0
        self._decoder = FrameDecoder()
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pn532-emulator", daemon=True)

    # --- control from the test ------------------------------------------------------------

    def start(self) -> Pn532Emulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def fault(self, *names: str) -> None:
        with self._lock:
            self.faults.extend(names)

    def reset(self) -> None:
        with self._lock:
            self.awake = self.configured = False
            self._decoder = FrameDecoder()
            os.write(self.master, b"\xff\x13\x37boot\r\n\x00\xff\x07")  # noise, a torn frame

    def wait_polls(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` more InListPassiveTarget have been answered."""
        with self._lock:
            target = self.polls + count
            if not self._lock.wait_for(lambda: self.polls >= target, timeout):
                raise AssertionError(f"the provider did not poll {count} times in {timeout} s")

    # --- the board ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                return  # the pty was closed
            with self._lock:
                if not self.awake:
                    wake = data.find(b"\x55")
                    if wake < 0:
                        continue  # asleep: deaf to anything but the wake-up
                    self.awake, data = True, data[wake + 1:]
                for frame in self._decoder.feed(data):
                    if isinstance(frame, Info) and frame.tfi == 0xD4:
                        self._command(frame.data[0], frame.data[1:])
                    # host ACKs (abort) and anything else: nothing to do
                self._lock.notify_all()

    def _command(self, code: int, params: bytes) -> None:
        self.commands.append(code)
        fault = self.faults.popleft() if self.faults else None
        if fault == "lost":
            return
        if fault != "no_ack":
            os.write(self.master, ACK_FRAME)
        if code == 0x14:  # SAMConfiguration
            self.configured, answer = True, b""
            self.sam_count += 1
        elif code == 0x02:  # GetFirmwareVersion: PN532, v1.6, supports ISO 14443A/B + 18092
            answer = b"\x32\x01\x06\x07"
        elif code == 0x32 and self.configured:  # RFConfiguration
            answer = b""
        elif code == 0x4A and self.configured and params[:2] == b"\x01\x00":
            card = self.card
            if card is None:
                answer = b"\x00"
            else:
                answer = (b"\x01\x01" + card.sens_res + bytes([card.sel_res, len(card.uid)])
                          + card.uid + card.ats)
            self.polls += 1
        else:
            os.write(self.master, ERROR_FRAME)
            return
        bad_poll = self.corrupt_polls and code == 0x4A
        os.write(self.master, answer_frame(code + 1, answer, bad_lcs=fault == "bad_lcs",
                                           bad_dcs=fault == "bad_dcs" or bad_poll))
