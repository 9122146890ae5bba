"""Token providers without hardware: RDM6300 frames, lines, HID key events (recorded),
the debounce with a fake clock, UID normalisation, and the reader threads with fake
devices (pipes). No sleeps: threads are waited for with queue timeouts."""

from __future__ import annotations

import os
import queue
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from auth_module.plugins import hid_reader, serial_reader, stdin_reader
from auth_module.plugins.base import PluginContext
from auth_module.plugins.hid_reader import HidOptions, HidProvider, KeyDecoder, decode_key_events
from auth_module.plugins.loader import PluginError
from auth_module.plugins.providers import (
    Debouncer,
    LineDecoder,
    ProviderOptions,
    ReaderProvider,
    normalise_uid,
)
from auth_module.plugins.serial_reader import Rdm6300Decoder, SerialProvider, rdm6300_frame
from auth_module.plugins.stdin_reader import StdinOptions, StdinProvider
from auth_module.types import AuthorizationType, IdTokenType, ProvidedIdToken

pytestmark = pytest.mark.timeout(10)

CTX = PluginContext(base_dir=Path("."))
WAIT = 5.0

# A reader typing "0012345678" + Enter (evtest: EV_MSC scan, EV_KEY, EV_SYN).
DECIMAL_READER = [
    (1700000000, 107992, 4, 4, 458791), (1700000000, 107992, 1, 11, 1),
    (1700000000, 107992, 0, 0, 0), (1700000000, 115984, 4, 4, 458791),
    (1700000000, 115984, 1, 11, 0), (1700000000, 115984, 0, 0, 0),
    (1700000000, 123976, 4, 4, 458791), (1700000000, 123976, 1, 11, 1),
    (1700000000, 123976, 0, 0, 0), (1700000000, 131968, 4, 4, 458791),
    (1700000000, 131968, 1, 11, 0), (1700000000, 131968, 0, 0, 0),
    (1700000000, 139960, 4, 4, 458782), (1700000000, 139960, 1, 2, 1),
    (1700000000, 139960, 0, 0, 0), (1700000000, 147952, 4, 4, 458782),
    (1700000000, 147952, 1, 2, 0), (1700000000, 147952, 0, 0, 0),
    (1700000000, 155944, 4, 4, 458783), (1700000000, 155944, 1, 3, 1),
    (1700000000, 155944, 0, 0, 0), (1700000000, 163936, 4, 4, 458783),
    (1700000000, 163936, 1, 3, 0), (1700000000, 163936, 0, 0, 0),
    (1700000000, 171928, 4, 4, 458784), (1700000000, 171928, 1, 4, 1),
    (1700000000, 171928, 0, 0, 0), (1700000000, 179920, 4, 4, 458784),
    (1700000000, 179920, 1, 4, 0), (1700000000, 179920, 0, 0, 0),
    (1700000000, 187912, 4, 4, 458785), (1700000000, 187912, 1, 5, 1),
    (1700000000, 187912, 0, 0, 0), (1700000000, 195904, 4, 4, 458785),
    (1700000000, 195904, 1, 5, 0), (1700000000, 195904, 0, 0, 0),
    (1700000000, 203896, 4, 4, 458786), (1700000000, 203896, 1, 6, 1),
    (1700000000, 203896, 0, 0, 0), (1700000000, 211888, 4, 4, 458786),
    (1700000000, 211888, 1, 6, 0), (1700000000, 211888, 0, 0, 0),
    (1700000000, 219880, 4, 4, 458787), (1700000000, 219880, 1, 7, 1),
    (1700000000, 219880, 0, 0, 0), (1700000000, 227872, 4, 4, 458787),
    (1700000000, 227872, 1, 7, 0), (1700000000, 227872, 0, 0, 0),
    (1700000000, 235864, 4, 4, 458788), (1700000000, 235864, 1, 8, 1),
    (1700000000, 235864, 0, 0, 0), (1700000000, 243856, 4, 4, 458788),
    (1700000000, 243856, 1, 8, 0), (1700000000, 243856, 0, 0, 0),
    (1700000000, 251848, 4, 4, 458789), (1700000000, 251848, 1, 9, 1),
    (1700000000, 251848, 0, 0, 0), (1700000000, 259840, 4, 4, 458789),
    (1700000000, 259840, 1, 9, 0), (1700000000, 259840, 0, 0, 0),
    (1700000000, 267832, 4, 4, 458792), (1700000000, 267832, 1, 28, 1),
    (1700000000, 267832, 0, 0, 0), (1700000000, 275824, 4, 4, 458792),
    (1700000000, 275824, 1, 28, 0), (1700000000, 275824, 0, 0, 0),
]
# A reader typing "04A22B1C" + Enter, with Shift held around each letter.
HEX_READER = [
    (1700000005, 107992, 4, 4, 458791), (1700000005, 107992, 1, 11, 1),
    (1700000005, 107992, 0, 0, 0), (1700000005, 115984, 4, 4, 458791),
    (1700000005, 115984, 1, 11, 0), (1700000005, 115984, 0, 0, 0),
    (1700000005, 123976, 4, 4, 458785), (1700000005, 123976, 1, 5, 1),
    (1700000005, 123976, 0, 0, 0), (1700000005, 131968, 4, 4, 458785),
    (1700000005, 131968, 1, 5, 0), (1700000005, 131968, 0, 0, 0),
    (1700000005, 139960, 4, 4, 458977), (1700000005, 139960, 1, 42, 1),
    (1700000005, 139960, 0, 0, 0), (1700000005, 147952, 4, 4, 458756),
    (1700000005, 147952, 1, 30, 1), (1700000005, 147952, 0, 0, 0),
    (1700000005, 155944, 4, 4, 458756), (1700000005, 155944, 1, 30, 0),
    (1700000005, 155944, 0, 0, 0), (1700000005, 163936, 4, 4, 458977),
    (1700000005, 163936, 1, 42, 0), (1700000005, 163936, 0, 0, 0),
    (1700000005, 171928, 4, 4, 458783), (1700000005, 171928, 1, 3, 1),
    (1700000005, 171928, 0, 0, 0), (1700000005, 179920, 4, 4, 458783),
    (1700000005, 179920, 1, 3, 0), (1700000005, 179920, 0, 0, 0),
    (1700000005, 187912, 4, 4, 458783), (1700000005, 187912, 1, 3, 1),
    (1700000005, 187912, 0, 0, 0), (1700000005, 195904, 4, 4, 458783),
    (1700000005, 195904, 1, 3, 0), (1700000005, 195904, 0, 0, 0),
    (1700000005, 203896, 4, 4, 458977), (1700000005, 203896, 1, 42, 1),
    (1700000005, 203896, 0, 0, 0), (1700000005, 211888, 4, 4, 458757),
    (1700000005, 211888, 1, 48, 1), (1700000005, 211888, 0, 0, 0),
    (1700000005, 219880, 4, 4, 458757), (1700000005, 219880, 1, 48, 0),
    (1700000005, 219880, 0, 0, 0), (1700000005, 227872, 4, 4, 458977),
    (1700000005, 227872, 1, 42, 0), (1700000005, 227872, 0, 0, 0),
    (1700000005, 235864, 4, 4, 458782), (1700000005, 235864, 1, 2, 1),
    (1700000005, 235864, 0, 0, 0), (1700000005, 243856, 4, 4, 458782),
    (1700000005, 243856, 1, 2, 0), (1700000005, 243856, 0, 0, 0),
    (1700000005, 251848, 4, 4, 458977), (1700000005, 251848, 1, 42, 1),
    (1700000005, 251848, 0, 0, 0), (1700000005, 259840, 4, 4, 458758),
    (1700000005, 259840, 1, 46, 1), (1700000005, 259840, 0, 0, 0),
    (1700000005, 267832, 4, 4, 458758), (1700000005, 267832, 1, 46, 0),
    (1700000005, 267832, 0, 0, 0), (1700000005, 275824, 4, 4, 458977),
    (1700000005, 275824, 1, 42, 0), (1700000005, 275824, 0, 0, 0),
    (1700000005, 283816, 4, 4, 458792), (1700000005, 283816, 1, 28, 1),
    (1700000005, 283816, 0, 0, 0), (1700000005, 291808, 4, 4, 458792),
    (1700000005, 291808, 1, 28, 0), (1700000005, 291808, 0, 0, 0),
]


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# --- RDM6300 -------------------------------------------------------------------------------

# Checksums worked out by hand: 0A^00^1B^2C^3D = 00, 11^00^A2^B3^C4 = C4.
FRAME_A = b"\x020A001B2C3D00\x03"
FRAME_B = b"\x021100A2B3C4C4\x03"


def test_rdm6300_frame_builder_matches_hand_computed_frames() -> None:
    assert rdm6300_frame("0A001B2C3D") == FRAME_A
    assert rdm6300_frame("1100a2b3c4") == FRAME_B


def test_rdm6300_decodes_good_frames() -> None:
    decoder = Rdm6300Decoder()
    assert decoder.feed(FRAME_A + FRAME_B) == ["0A001B2C3D", "1100A2B3C4"]
    assert decoder.bad_frames == 0


def test_rdm6300_frame_split_across_reads() -> None:
    decoder = Rdm6300Decoder()
    stream = FRAME_A + FRAME_B
    uids: list[str] = []
    for i in range(len(stream)):  # one byte at a time, as a slow UART delivers them
        uids += decoder.feed(stream[i:i + 1])
    assert uids == ["0A001B2C3D", "1100A2B3C4"]


def test_rdm6300_lower_case_hex_is_accepted_and_upper_cased() -> None:
    assert Rdm6300Decoder().feed(b"\x021100a2b3c4c4\x03") == ["1100A2B3C4"]


def test_rdm6300_bad_checksum_is_dropped_and_reported() -> None:
    bad: list[str] = []
    decoder = Rdm6300Decoder(bad.append)
    frame = rdm6300_frame("0A001B2C3D", checksum=0x5A)
    assert decoder.feed(frame + FRAME_B) == ["1100A2B3C4"]
    assert decoder.bad_frames == 1
    assert len(bad) == 1 and "checksum" in bad[0] and "5A" in bad[0]


def test_rdm6300_noise_between_frames_is_ignored() -> None:
    bad: list[str] = []
    decoder = Rdm6300Decoder(bad.append)
    stream = b"\x00\xff garbage\r\n" + FRAME_A + b"\x03\x03zz" + FRAME_B + b"\xfe"
    assert decoder.feed(stream) == ["0A001B2C3D", "1100A2B3C4"]
    assert bad == []
    assert decoder.noise == len(stream) - len(FRAME_A) - len(FRAME_B)


@pytest.mark.parametrize(("stream", "why"), [
    (b"\x020A001B\x02" + FRAME_B[1:], "cut short"),          # a new STX inside a frame
    (b"\x020A001B2C3D\x03", "10 characters"),                # no checksum
    (b"\x020A001B2C3D00FF\x03", "no ETX"),                   # too long
    (b"\x020A001B2C3DZZ\x03", "not hexadecimal"),
])
def test_rdm6300_malformed_frames_are_dropped(stream: bytes, why: str) -> None:
    bad: list[str] = []
    decoder = Rdm6300Decoder(bad.append)
    uids = decoder.feed(stream + FRAME_A)
    assert uids[-1] == "0A001B2C3D"
    assert "0A001B2C3D" not in uids[:-1]
    assert decoder.bad_frames == 1
    assert why in bad[0]


def test_serial_provider_logs_a_run_of_bad_frames_once() -> None:
    provider = SerialProvider(serial_reader.SerialOptions(port="/dev/null"), clock=FakeClock())
    got: list[ProvidedIdToken] = []
    provider._on_token = got.append
    decoder = Rdm6300Decoder(provider._on_bad_frame)
    bad = rdm6300_frame("0A001B2C3D", checksum=0x00 ^ 0x01)
    with capture_logs() as logs:
        provider.handle(decoder.feed(bad * 5))
        provider.handle(decoder.feed(FRAME_B))
        provider.handle(decoder.feed(bad * 3))
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 2  # once per run of bad frames, re-armed by a good frame
    assert all("bad RDM6300 frame" in w["event"] and "\n" not in w["event"] for w in warnings)
    assert provider.bad_frames == 8
    assert [t.id_token.value for t in got] == ["1100A2B3C4"]


# --- lines ----------------------------------------------------------------------------------


def test_line_decoder_splits_any_line_end_and_skips_empty_lines() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b"04A22B1C\r\n\r\n  0a1b2c3d  \n") == ["04A22B1C", "0a1b2c3d"]
    assert decoder.feed(b"DEAD") == []
    assert decoder.feed(b"BEEF\rCAFE\n") == ["DEADBEEF", "CAFE"]


def test_line_decoder_drops_overlong_and_binary_lines() -> None:
    decoder = LineDecoder(max_length=16)
    assert decoder.feed(b"X" * 40 + b"\nOK1\n\xff\xfe\nOK2\n") == ["OK1", "OK2"]
    assert decoder.dropped == 2


# --- HID key events -------------------------------------------------------------------------


def test_hid_decodes_a_recorded_decimal_reader() -> None:
    assert decode_key_events(DECIMAL_READER) == ["0012345678"]


def test_hid_decodes_a_recorded_hex_reader_with_shift() -> None:
    assert decode_key_events(HEX_READER) == ["04A22B1C"]


def test_hid_two_cards_in_one_recording() -> None:
    assert decode_key_events(DECIMAL_READER + HEX_READER) == ["0012345678", "04A22B1C"]


def test_hid_ignores_auto_repeat_and_key_up_and_accepts_keypad() -> None:
    events = [
        (1, 79, 1), (1, 79, 2), (1, 79, 2), (1, 79, 0),  # KP1 held: one "1"
        (1, 82, 1), (1, 82, 0),                          # KP0
        (1, 12, 1), (1, 12, 0),                          # '-' separator, dropped
        (1, 33, 1), (1, 33, 0),                          # F
        (1, 96, 1), (1, 96, 0),                          # keypad Enter
    ]
    assert decode_key_events(events) == ["10F"]


def test_hid_an_unexpected_key_spoils_that_uid_only() -> None:
    decoder = KeyDecoder()
    events = [(1, 2, 1), (1, 16, 1), (1, 3, 1), (1, 28, 1),  # 1 Q 2 Enter -> dropped
              (1, 4, 1), (1, 28, 1)]                          # 3 Enter
    out = [decoder.feed(*e) for e in events]
    assert [u for u in out if u] == ["3"]
    assert decoder.dropped == 1


def test_hid_enter_alone_gives_nothing() -> None:
    assert decode_key_events([(1, 28, 1), (1, 28, 0), (0, 0, 0)]) == []


class FakeInputDevice:
    """evdev.InputDevice played with a pipe: readable when the test pushes events."""

    instances: list[FakeInputDevice] = []
    script: list[list[tuple[int, ...]]] = []

    def __init__(self, path: str) -> None:
        if path.endswith("missing"):
            raise FileNotFoundError(2, "No such file or directory")
        self.path = path
        self._r, self._w = os.pipe()
        self.fd = self._r
        self.grabbed = False
        self.closed = False
        self.batches: queue.Queue[list[Any]] = queue.Queue()
        FakeInputDevice.instances.append(self)

    def push(self, events: list[Any]) -> None:
        self.batches.put(events)
        os.write(self._w, b"x")

    def grab(self) -> None:
        self.grabbed = True

    def ungrab(self) -> None:
        self.grabbed = False

    def read(self) -> Iterator[Any]:
        os.read(self._r, 1)
        yield from self.batches.get_nowait()

    def close(self) -> None:
        self.closed = True
        os.close(self._r)
        os.close(self._w)


class FakeEvdev:
    InputDevice = FakeInputDevice


@pytest.fixture
def fake_evdev() -> Iterator[type[FakeInputDevice]]:
    FakeInputDevice.instances = []
    yield FakeInputDevice


def test_hid_provider_grabs_the_device_and_provides_tokens(fake_evdev: Any) -> None:
    provider = HidProvider(HidOptions(device="/dev/input/by-id/usb-reader-event-kbd"),
                           evdev_module=FakeEvdev, clock=FakeClock())
    got: queue.Queue[ProvidedIdToken] = queue.Queue()
    provider.start(got.put)
    try:
        assert provider.connected.wait(WAIT)
        device = fake_evdev.instances[0]
        assert device.grabbed  # EVIOCGRAB: no keystrokes reach a console
        device.push(DECIMAL_READER)
        device.push(HEX_READER)
        tokens = [got.get(timeout=WAIT), got.get(timeout=WAIT)]
        assert [t.id_token.value for t in tokens] == ["0012345678", "04A22B1C"]
        assert tokens[0].id_token.type == IdTokenType.ISO14443
        assert tokens[0].authorization_type == AuthorizationType.RFID
    finally:
        provider.close()
    assert not provider._thread.is_alive()
    assert device.closed and not device.grabbed


def test_hid_provider_missing_device_is_one_line_and_retried(fake_evdev: Any) -> None:
    attempts: queue.Queue[str] = queue.Queue()

    class Recording(HidProvider):
        def read_loop(self) -> None:
            attempts.put("open")
            super().read_loop()

    provider = Recording(HidOptions(device="/dev/input/missing"), evdev_module=FakeEvdev)
    provider.retry_s = 0.01
    with capture_logs() as logs:
        provider.start(lambda t: None)
        for _ in range(3):  # it keeps trying
            attempts.get(timeout=WAIT)
        provider.close()
    assert not provider._thread.is_alive()
    lines = [e["event"] for e in logs if "cannot open" in e["event"]]
    assert len(lines) == 1 and "\n" not in lines[0]  # the same reason is logged once
    assert "/dev/input/missing" in lines[0]


def test_hid_create_without_evdev_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "evdev", None)  # import evdev -> ImportError
    with pytest.raises(PluginError) as err:
        hid_reader.create({"device": "/dev/input/event0"}, CTX)
    assert "python-evdev" in str(err.value) and "\n" not in str(err.value)


def test_hid_options() -> None:
    assert hid_reader.HidOptions.model_validate({"device": "/dev/x"}).grab is True
    with pytest.raises(ValidationError):
        hid_reader.HidOptions.model_validate({"device": "/dev/x", "grabbed": True})


# --- normalisation and debounce ---------------------------------------------------------------


@pytest.mark.parametrize(("raw", "uid"), [
    ("04:a2:2b:1c", "04A22B1C"),
    (" 0a-1b-2c \r", "0A1B2C"),
    ("04 A2 2B 1C", "04A22B1C"),
    ("0012345678", "0012345678"),
    ("deadbeef", "DEADBEEF"),
    ("valid_rfid_1", "VALID_RFID_1"),   # not hex: only upper-cased
    ("", None),
    ("   ", None),
])
def test_normalise_uid(raw: str, uid: str | None) -> None:
    assert normalise_uid(raw) == uid


def test_debounce_one_card_held_is_one_swipe() -> None:
    clock = FakeClock()
    d = Debouncer(2.0, clock)
    assert d.accept("AA")
    for _ in range(20):  # the reader repeats the card every 0.1 s for 2 s
        clock.t += 0.1
        assert not d.accept("AA")
    clock.t += 1.9
    assert not d.accept("AA")  # 1.9 s after the last reading: still the same swipe
    clock.t += 2.0
    assert d.accept("AA")      # taken away and presented again: a new swipe


def test_debounce_other_cards_are_not_held_back() -> None:
    clock = FakeClock()
    d = Debouncer(2.0, clock)
    assert d.accept("AA")
    clock.t += 0.5
    assert d.accept("BB")
    clock.t += 0.5
    assert not d.accept("AA")


def test_debounce_zero_is_off() -> None:
    d = Debouncer(0.0, FakeClock())
    assert d.accept("AA") and d.accept("AA")


class ListProvider(ReaderProvider):
    def read_loop(self) -> None:  # never started in these tests
        raise AssertionError


def test_emit_applies_options_normalisation_and_debounce() -> None:
    clock = FakeClock()
    options = ProviderOptions.model_validate(
        {"token_type": "ISO15693", "authorization_type": "OCPP", "debounce_s": 1.5})
    provider = ListProvider("test", options, clock=clock)
    got: list[ProvidedIdToken] = []
    provider._on_token = got.append
    provider.emit("e0:04:01:00:12:34:56:78")
    provider.emit("E0040100 12345678")      # the same card, written differently
    clock.t += 1.6
    provider.emit("e0040100:12345678")
    assert [t.id_token.value for t in got] == ["E004010012345678"] * 2
    assert got[0].id_token.type == IdTokenType.ISO15693
    assert got[0].authorization_type == AuthorizationType.OCPP


def test_emit_drops_overlong_uids_and_survives_a_failing_callback() -> None:
    provider = ListProvider("test", ProviderOptions(debounce_s=0), clock=FakeClock())

    def broken(_token: ProvidedIdToken) -> None:
        raise RuntimeError("downstream\nproblem")

    provider._on_token = broken
    with capture_logs() as logs:
        assert provider.emit("A" * 37) is None
        assert provider.emit("ABCD") is not None  # the callback raised; emit did not
    errors = [e["event"] for e in logs if e["log_level"] in ("warning", "error")]
    assert len(errors) == 2 and all("\n" not in e for e in errors)


def test_provider_options_defaults_and_refusals() -> None:
    options = ProviderOptions()
    assert (options.token_type, options.authorization_type, options.debounce_s) == (
        IdTokenType.ISO14443, AuthorizationType.RFID, 2.0)
    for bad in ({"debounce_s": -1}, {"token_type": "RFID"}, {"authorization_type": "Card"},
                {"debounce": 1}):
        with pytest.raises(ValidationError):
            ProviderOptions.model_validate(bad)


def test_serial_options() -> None:
    parsed = serial_reader.SerialOptions.model_validate({"port": "/dev/serial0"})
    assert (parsed.protocol, parsed.baudrate, parsed.debounce_s) == ("rdm6300", 9600, 2.0)
    for bad in ({}, {"port": " "}, {"port": "/dev/x", "protocol": "wiegand"},
                {"port": "/dev/x", "baudrate": 0}, {"port": "/dev/x", "speed": 9600}):
        with pytest.raises(ValidationError):
            serial_reader.SerialOptions.model_validate(bad)


def test_serial_create_without_pyserial_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "serial", None)
    with pytest.raises(PluginError) as err:
        serial_reader.create({"port": "/dev/serial0"}, CTX)
    assert "pyserial" in str(err.value) and "\n" not in str(err.value)


# --- stdin --------------------------------------------------------------------------------------


def test_stdin_provider_reads_lines_until_end_of_input() -> None:
    r, w = os.pipe()
    provider = StdinProvider(StdinOptions(debounce_s=0), fd=r, clock=FakeClock())
    got: queue.Queue[ProvidedIdToken] = queue.Queue()
    provider.start(got.put)
    try:
        os.write(w, b"valid_rfid_1\n\n04:a2:2b:1c\nVALID_RFID_1\nlast-without-newline")
        os.close(w)
        values = [got.get(timeout=WAIT).id_token.value for _ in range(4)]
        assert values == ["VALID_RFID_1", "04A22B1C", "VALID_RFID_1", "LAST-WITHOUT-NEWLINE"]
        provider._thread.join(WAIT)
        assert provider.ended and not provider._thread.is_alive()
    finally:
        provider.close()
        os.close(r)


def test_stdin_provider_closes_while_waiting_for_input() -> None:
    r, w = os.pipe()
    provider = stdin_reader.StdinProvider(StdinOptions(), fd=r)
    provider.start(lambda t: None)
    assert provider.connected.wait(WAIT)
    provider.close()
    assert not provider._thread.is_alive()
    os.close(r)
    os.close(w)


def test_stdin_create_refuses_unknown_options() -> None:
    assert stdin_reader.create({"debounce_s": 0}, CTX).options.debounce_s == 0
    with pytest.raises(ValidationError):
        stdin_reader.create({"prompt": "card?"}, CTX)
