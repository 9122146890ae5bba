"""The PN532's frame protocol (NXP UM0701-02, §6.2), as pure functions: no I/O, no clock.

The host and the PN532 exchange frames on the UART (HSU, 115200 8N1)::

    normal information frame   00 00 FF  LEN LCS  TFI PD0 .. PDn  DCS  00
    extended information frame 00 00 FF FF FF  LENM LENL LCS  TFI PD0 .. PDn  DCS  00
    ACK                        00 00 FF 00 FF 00
    NACK                       00 00 FF FF 00 00
    error frame                00 00 FF 01 FF 7F 81 00   (a normal frame whose TFI is 7F)

``LEN`` counts TFI and the PD bytes; ``LCS`` makes ``LEN + LCS`` zero modulo 256 and
``DCS`` makes ``TFI + PD0 + .. + PDn + DCS`` zero. TFI is D4 from the host and D5 from
the PN532; the PN532 answers command ``C`` with ``C + 1``.

The host wakes the PN532 from its power-on sleep (LowVbat) by sending ``55`` and a run of
zero bytes before its first command, which must be ``SAMConfiguration``.

:class:`FrameDecoder` turns a byte stream, noise included, into :class:`Ack`, :class:`Nack`,
:class:`Info`, :class:`ErrorFrame` and :class:`BadFrame` values; it is shared by the
provider and the test emulator (which also has its own encoder, so the two sides do not
just agree with themselves).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACK", "NACK", "WAKE_UP", "HOST", "PN532",
    "GET_FIRMWARE_VERSION", "SAM_CONFIGURATION", "RF_CONFIGURATION", "IN_LIST_PASSIVE_TARGET",
    "Ack", "Nack", "Info", "ErrorFrame", "BadFrame", "Frame", "FrameDecoder", "Target",
    "encode", "parse_targets", "parse_firmware", "checksum",
]

HOST, PN532 = 0xD4, 0xD5  # TFI of host -> PN532 and PN532 -> host frames
ERROR_TFI = 0x7F
ACK = bytes.fromhex("0000FF00FF00")
NACK = bytes.fromhex("0000FFFF0000")
#: the HSU wake-up: 0x55 then enough zeros (> 1 ms at 115200 baud) for the PN532 to wake
WAKE_UP = b"\x55\x55" + bytes(14)

GET_FIRMWARE_VERSION = 0x02
SAM_CONFIGURATION = 0x14
RF_CONFIGURATION = 0x32
IN_LIST_PASSIVE_TARGET = 0x4A

#: the longest information frame we accept (the PN532's own limit is 265 bytes of data)
MAX_DATA = 265


def checksum(data: bytes) -> int:
    """The byte that makes ``sum(data) + checksum`` zero modulo 256 (LCS and DCS)."""
    return (-sum(data)) & 0xFF


def encode(command: int, params: bytes = b"", tfi: int = HOST) -> bytes:
    """A normal information frame carrying ``command`` and ``params`` (TFI ``tfi``)."""
    body = bytes([tfi, command]) + params
    if len(body) > 255:
        raise ValueError("a normal frame carries at most 254 bytes of parameters")
    return (b"\x00\x00\xff" + bytes([len(body), checksum(bytes([len(body)]))]) + body
            + bytes([checksum(body), 0x00]))


@dataclass(frozen=True)
class Ack:
    pass


@dataclass(frozen=True)
class Nack:
    pass


@dataclass(frozen=True)
class Info:
    """An information frame: ``tfi`` and its data (command code first)."""

    tfi: int
    data: bytes

    @property
    def command(self) -> int:
        return self.data[0] if self.data else -1


@dataclass(frozen=True)
class ErrorFrame:
    """The PN532's application-level error frame (it could not understand the command)."""


@dataclass(frozen=True)
class BadFrame:
    """A frame dropped: a checksum that does not match, or a length out of range."""

    reason: str


Frame = Ack | Nack | Info | ErrorFrame | BadFrame


class FrameDecoder:
    """Bytes in, frames out: a pure state machine that resynchronises on the start code.

    Bytes outside frames (preambles, postambles, a waking board's noise) are skipped and
    counted in :attr:`noise`. A frame whose LCS or DCS is wrong comes out as
    :class:`BadFrame`, and decoding goes on after its start code, so one corrupted byte
    costs one frame.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.noise = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while True:
            start = self._buf.find(b"\x00\xff")
            if start < 0:
                keep = 1 if self._buf.endswith(b"\x00") else 0  # maybe half a start code
                self._count_noise(self._buf[: len(self._buf) - keep])
                del self._buf[: len(self._buf) - keep]
                return frames
            self._count_noise(self._buf[:start])
            del self._buf[:start]
            frame, used = self._one(bytes(self._buf))
            if frame is None:
                return frames  # incomplete: wait for more bytes
            frames.append(frame)
            del self._buf[:used]

    def _count_noise(self, skipped: bytes | bytearray) -> None:
        self.noise += sum(1 for b in skipped if b != 0)  # zeros are pre-/postambles

    @staticmethod
    def _one(buf: bytes) -> tuple[Frame | None, int]:
        """Decode the frame at the start of ``buf`` (which begins with 00 FF): the frame
        and the bytes it used, or (None, 0) if more bytes are needed."""
        if len(buf) < 4:
            return None, 0
        length, lcs = buf[2], buf[3]
        if length == 0x00 and lcs == 0xFF:
            return Ack(), 4
        if length == 0xFF and lcs == 0x00:
            return Nack(), 4
        if length == 0xFF and lcs == 0xFF:  # extended frame
            if len(buf) < 7:
                return None, 0
            length = (buf[4] << 8) | buf[5]
            if (buf[4] + buf[5] + buf[6]) & 0xFF:
                return BadFrame("extended length checksum does not match"), 2
            head = 7
        else:
            if (length + lcs) & 0xFF:
                return BadFrame("length checksum does not match"), 2
            head = 4
        if length == 0 or length > MAX_DATA:
            return BadFrame(f"frame length {length} out of range"), 2
        if len(buf) < head + length + 1:
            return None, 0
        body = buf[head: head + length]
        if (sum(body) + buf[head + length]) & 0xFF:
            return BadFrame("data checksum does not match"), 2
        used = head + length + 1
        if body[0] == ERROR_TFI:
            return ErrorFrame(), used
        return Info(body[0], bytes(body[1:])), used


# --- answers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One ISO 14443A target found by InListPassiveTarget (106 kbps type A)."""

    uid: bytes
    sens_res: bytes
    sel_res: int

    @property
    def uid_hex(self) -> str:
        return self.uid.hex().upper()


def parse_targets(data: bytes) -> list[Target]:
    """The targets in an InListPassiveTarget answer (``data`` after the command code 4B):
    ``NbTg`` then per target ``Tg SENS_RES(2) SEL_RES NFCIDLength NFCID1 [ATS]``; the ATS
    (its first byte counts itself) follows when SEL_RES says ISO 14443-4 (bit 0x20).

    Raises ValueError on an answer that does not add up."""
    if not data:
        raise ValueError("empty InListPassiveTarget answer")
    count, pos, targets = data[0], 1, []
    if count > 2:
        raise ValueError(f"InListPassiveTarget says {count} targets (at most 2)")
    for _ in range(count):
        if len(data) < pos + 5:
            raise ValueError("InListPassiveTarget answer cut short")
        sens_res, sel_res, uid_len = data[pos + 1: pos + 3], data[pos + 3], data[pos + 4]
        pos += 5
        if uid_len not in (4, 7, 10) or len(data) < pos + uid_len:
            raise ValueError(f"InListPassiveTarget answer has a UID of {uid_len} bytes")
        uid = data[pos: pos + uid_len]
        pos += uid_len
        if sel_res & 0x20 and pos < len(data):
            ats_len = data[pos]
            if ats_len < 1 or len(data) < pos + ats_len:
                raise ValueError("InListPassiveTarget answer has a cut ATS")
            pos += ats_len
        targets.append(Target(uid=bytes(uid), sens_res=bytes(sens_res), sel_res=sel_res))
    return targets


def parse_firmware(data: bytes) -> str:
    """``"PN532 v1.6"`` from a GetFirmwareVersion answer (``IC Ver Rev Support``)."""
    if len(data) < 4:
        raise ValueError("GetFirmwareVersion answer cut short")
    ic = f"PN5{data[0]:02X}" if data[0] in (0x31, 0x32, 0x33) else f"IC {data[0]:02X}"
    return f"{ic} v{data[1]}.{data[2]}"
