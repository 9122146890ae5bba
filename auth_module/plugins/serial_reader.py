"""Token provider ``serial``: an RFID reader on a UART (pyserial; ``pip install 'auth-module[serial]'``).

Options (beside those of every provider, see :mod:`auth_module.plugins.providers`)::

    - plugin: serial
      port: /dev/serial0         # a device path, or a pyserial URL (rfc2217://host:port)
      protocol: rdm6300          # or: lines
      baudrate: 9600             # RDM6300: 9600 8N1

``rdm6300``: the 125 kHz RDM6300 (and its clones) sends, for every card in its field,
about ten times a second, a 14-byte frame: STX (0x02), 10 ASCII hex characters (the
card's 5 bytes: a version/customer byte and the 32-bit id), 2 ASCII hex characters of
checksum (the XOR of those 5 bytes), ETX (0x03). The UID provided is the 10 hex
characters. A frame whose checksum does not match, or that is cut short, is dropped; the
first bad frame after a good one is logged, the rest are only counted. Bytes between
frames are ignored.

``lines``: readers that print one UID per line (``\\n``, ``\\r\\n`` or ``\\r``).

The port is opened when the module is ready and reopened every 2 s while it is missing
or after it failed (a USB adapter pulled out and put back).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from .base import PluginContext
from .loader import PluginError, register_options_model
from .providers import LineDecoder, ProviderOptions, ReaderProvider

__all__ = ["Rdm6300Decoder", "SerialOptions", "SerialProvider", "create", "open_serial",
           "rdm6300_frame"]

STX, ETX = 0x02, 0x03
_DATA_CHARS = 10
_FRAME_CHARS = 12  # data + checksum, between STX and ETX
_HEX = frozenset(b"0123456789ABCDEFabcdef")


def rdm6300_frame(uid: str, checksum: int | None = None) -> bytes:
    """The RDM6300 frame for ``uid`` (10 hex characters); ``checksum`` overrides the right
    one (for tests of bad frames)."""
    if len(uid) != _DATA_CHARS:
        raise ValueError("an RDM6300 UID is 10 hex characters")
    data = bytes.fromhex(uid)
    check = 0
    for b in data:
        check ^= b
    if checksum is not None:
        check = checksum
    body = uid.upper().encode("ascii") + f"{check:02X}".encode("ascii")
    return bytes([STX]) + body + bytes([ETX])


class Rdm6300Decoder:
    """Turns the bytes of an RDM6300 into UIDs; a pure state machine (no I/O).

    ``on_bad(reason)`` is called for every frame dropped; :attr:`bad_frames` counts them
    and :attr:`noise` counts the bytes seen outside any frame.
    """

    def __init__(self, on_bad: Callable[[str], None] | None = None) -> None:
        self._on_bad = on_bad
        self._frame: bytearray | None = None  # None: between frames
        self.bad_frames = 0
        self.noise = 0

    def feed(self, data: bytes) -> list[str]:
        uids: list[str] = []
        for byte in data:
            frame = self._frame
            if byte == STX:
                if frame is not None:
                    self._bad(f"frame cut short after {len(frame)} characters")
                self._frame = bytearray()
            elif frame is None:
                self.noise += 1
            elif byte == ETX:
                self._frame = None
                uid = self._check(frame)
                if uid is not None:
                    uids.append(uid)
            elif len(frame) >= _FRAME_CHARS:
                self._frame = None
                self._bad("no ETX after 12 characters")
            else:
                frame.append(byte)
        return uids

    def _check(self, frame: bytearray) -> str | None:
        if len(frame) != _FRAME_CHARS:
            self._bad(f"frame of {len(frame)} characters (expected {_FRAME_CHARS})")
            return None
        if not all(b in _HEX for b in frame):
            self._bad("frame is not hexadecimal")
            return None
        text = frame.decode("ascii").upper()
        data = bytes.fromhex(text[:_DATA_CHARS])
        computed = 0
        for b in data:
            computed ^= b
        received = int(text[_DATA_CHARS:], 16)
        if computed != received:
            self._bad(f"checksum mismatch (frame says {received:02X}, data gives {computed:02X})")
            return None
        return text[:_DATA_CHARS]

    def _bad(self, reason: str) -> None:
        self.bad_frames += 1
        if self._on_bad is not None:
            self._on_bad(reason)


@register_options_model
class SerialOptions(ProviderOptions):
    port: str
    protocol: Literal["rdm6300", "lines"] = "rdm6300"
    baudrate: int = Field(default=9600, gt=0)

    @field_validator("port")
    @classmethod
    def _port(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a device path such as /dev/serial0")
        return value.strip()


class SerialProvider(ReaderProvider):
    """Reads a UART with pyserial on its own thread (see the module doc)."""

    kind = "serial"

    read_timeout_s = 0.1

    def __init__(self, options: SerialOptions, **kwargs: Any) -> None:
        super().__init__(f"serial:{options.port}", options, **kwargs)
        self.options: SerialOptions = options
        self._bad_logged = False
        #: every frame dropped so far (rdm6300), every line dropped (lines)
        self.bad_frames = 0

    def _on_bad_frame(self, reason: str) -> None:
        self.bad_frames += 1
        if not self._bad_logged:
            self._bad_logged = True
            self.log.warning(f"token provider {self.name}: bad RDM6300 frame dropped: {reason} "
                             "(further bad frames are not logged until a good one)")

    def handle(self, uids: list[str]) -> None:
        for uid in uids:
            self._bad_logged = False
            self.emit(uid)

    def read_loop(self) -> None:
        ser = open_serial(self.options.port, self.options.baudrate, self.read_timeout_s)
        try:
            ser.reset_input_buffer()
            self.opened(self.options.port)
            if self.options.protocol == "rdm6300":
                decoder: Any = Rdm6300Decoder(self._on_bad_frame)
            else:
                decoder = LineDecoder()
            while not self.stopping.is_set():
                data = ser.read(ser.in_waiting or 1)
                if data:
                    self.handle(decoder.feed(data))
        finally:
            ser.close()


def open_serial(port: str, baudrate: int, timeout_s: float) -> Any:
    """``port`` opened with pyserial (exclusively unless it is a URL), or an OSError that
    says in one short line why not."""
    import serial  # the dependency is checked by create()

    kwargs: dict[str, Any] = {"baudrate": baudrate, "timeout": timeout_s}
    if "://" not in port:
        kwargs["exclusive"] = True
    try:
        return serial.serial_for_url(port, **kwargs)
    except serial.SerialException as exc:
        # pyserial's text repeats the port and the errno; keep it short
        errno = getattr(exc, "errno", None)
        reason = os.strerror(errno) if isinstance(errno, int) else str(exc)
        raise OSError(f"cannot open {port}: {reason}") from None


def require_pyserial(plugin: str) -> None:
    """Fail at start, in one line, when a serial-port plugin is configured without pyserial."""
    try:
        import serial  # noqa: F401
    except ImportError:
        raise PluginError(f"the {plugin} plugin needs pyserial: pip install "
                          "'auth-module[serial]'") from None


def create(options: dict[str, Any], context: PluginContext) -> SerialProvider:
    parsed = SerialOptions.model_validate(options)
    require_pyserial("serial")
    return SerialProvider(parsed)
