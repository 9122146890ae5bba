"""Token provider ``hid``: a USB "keyboard wedge" RFID reader, read through Linux evdev.

Such a reader is a keyboard to the computer: for every card it types the UID (decimal
digits or hex characters) and Enter. This plugin reads the reader's event device directly
with python-evdev (``pip install 'auth-module[hid]'``, Linux only) and *grabs* it
(``EVIOCGRAB``) so the keystrokes reach no console or other program::

    - plugin: hid
      device: /dev/input/by-id/usb-Sycreader_RFID_Technology_Co.__Ltd_SYC_ID_IC_USB_Reader_08FF20140315-event-kbd
      grab: true                 # default

Only key presses count (not releases or auto-repeats): ``0``-``9`` (main row and keypad),
``A``-``F``, ignoring Shift; Enter (either) ends the UID; ``-``, ``:``, ``.`` and space
are separators and dropped; any other key makes the UID being typed invalid (it is dropped
at Enter). The device is reopened every 2 s while it is missing (unplugged).
"""

from __future__ import annotations

import select
from collections.abc import Iterable
from typing import Any

from pydantic import field_validator

from .base import PluginContext
from .loader import PluginError, register_options_model
from .providers import ProviderOptions, ReaderProvider

__all__ = ["HidOptions", "HidProvider", "KeyDecoder", "create", "decode_key_events"]

# Linux input-event-codes.h (stable ABI), so that decoding needs no evdev.
EV_KEY = 0x01
KEY_DOWN = 1  # 0: up, 2: auto-repeat
KEY_ENTER, KEY_KPENTER = 28, 96
_KEY_CHARS: dict[int, str] = {
    2: "1", 3: "2", 4: "3", 5: "4", 6: "5", 7: "6", 8: "7", 9: "8", 10: "9", 11: "0",
    79: "1", 80: "2", 81: "3", 75: "4", 76: "5", 77: "6", 71: "7", 72: "8", 73: "9", 82: "0",
    30: "A", 48: "B", 46: "C", 32: "D", 18: "E", 33: "F",
}
_SEPARATOR_KEYS = frozenset({
    12,   # KEY_MINUS
    39,   # KEY_SEMICOLON (':' with Shift)
    52,   # KEY_DOT
    57,   # KEY_SPACE
    74,   # KEY_KPMINUS
    83,   # KEY_KPDOT
})
_IGNORED_KEYS = frozenset({
    42, 54,    # KEY_LEFTSHIFT, KEY_RIGHTSHIFT
    58, 69,    # KEY_CAPSLOCK, KEY_NUMLOCK
    29, 97,    # KEY_LEFTCTRL, KEY_RIGHTCTRL
})
MAX_UID_KEYS = 64


class KeyDecoder:
    """Key events in, UIDs out: a pure state machine (no evdev, no I/O).

    :meth:`feed` takes one input event as ``(type, code, value)`` and returns the UID
    completed by it (at Enter), else None. :attr:`dropped` counts UIDs thrown away
    because of an unexpected key or an overlong input.
    """

    def __init__(self) -> None:
        self._chars: list[str] = []
        self._spoiled = False
        self.dropped = 0

    def feed(self, type_: int, code: int, value: int) -> str | None:
        if type_ != EV_KEY or value != KEY_DOWN:
            return None
        if code in (KEY_ENTER, KEY_KPENTER):
            uid = "".join(self._chars)
            spoiled = self._spoiled
            self._chars.clear()
            self._spoiled = False
            if spoiled:
                self.dropped += 1
                return None
            return uid or None
        char = _KEY_CHARS.get(code)
        if char is not None:
            if len(self._chars) >= MAX_UID_KEYS:
                self._spoiled = True
            else:
                self._chars.append(char)
        elif code not in _SEPARATOR_KEYS and code not in _IGNORED_KEYS:
            self._spoiled = True
        return None


def decode_key_events(events: Iterable[Any]) -> list[str]:
    """The UIDs typed by ``events``: ``(type, code, value)`` tuples, longer tuples recorded
    as ``(sec, usec, type, code, value)``, or evdev ``InputEvent`` objects."""
    decoder = KeyDecoder()
    uids: list[str] = []
    for event in events:
        uid = decoder.feed(*_event_fields(event))
        if uid is not None:
            uids.append(uid)
    return uids


def _event_fields(event: Any) -> tuple[int, int, int]:
    if isinstance(event, tuple):
        return (event[-3], event[-2], event[-1])
    return (event.type, event.code, event.value)


@register_options_model
class HidOptions(ProviderOptions):
    device: str
    grab: bool = True

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be an event device such as /dev/input/by-id/...-event-kbd")
        return value.strip()


def _import_evdev() -> Any:
    try:
        import evdev
    except ImportError:
        raise PluginError("the hid plugin needs python-evdev (Linux only): pip install "
                          "'auth-module[hid]'") from None
    return evdev


class HidProvider(ReaderProvider):
    """Reads a keyboard-wedge reader's event device on its own thread."""

    kind = "hid"

    poll_s = 0.2

    def __init__(self, options: HidOptions, evdev_module: Any = None, **kwargs: Any) -> None:
        super().__init__(f"hid:{options.device}", options, **kwargs)
        self.options: HidOptions = options
        self._evdev = evdev_module
        self.grabbed = False

    def read_loop(self) -> None:
        evdev = self._evdev or _import_evdev()
        path = self.options.device
        try:
            device = evdev.InputDevice(path)
        except OSError as exc:
            raise OSError(f"cannot open {path}: {exc.strerror or exc}") from None
        try:
            if self.options.grab:
                try:
                    device.grab()
                except OSError as exc:
                    raise OSError(f"cannot grab {path} (is another program reading it?): "
                                  f"{exc.strerror or exc}") from None
                self.grabbed = True
            self.opened(path)
            decoder = KeyDecoder()
            while not self.stopping.is_set():
                ready, _, _ = select.select([device.fd], [], [], self.poll_s)
                if not ready:
                    continue
                try:
                    events = list(device.read())  # OSError (ENODEV) when unplugged
                except BlockingIOError:
                    continue
                for event in events:
                    uid = decoder.feed(*_event_fields(event))
                    if uid is not None:
                        self.emit(uid)
        finally:
            if self.grabbed:
                try:
                    device.ungrab()
                except OSError:
                    pass  # gone with the device
                self.grabbed = False
            device.close()


def create(options: dict[str, Any], context: PluginContext) -> HidProvider:
    parsed = HidOptions.model_validate(options)
    evdev = _import_evdev()
    return HidProvider(parsed, evdev_module=evdev)
