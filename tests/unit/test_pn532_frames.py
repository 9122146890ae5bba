"""The PN532 frame codec against the byte sequences of NXP UM0701-02, and the command
link on a scripted port (no I/O, no waiting)."""

from __future__ import annotations

import pytest

from auth_module.plugins import pn532_frames as pf
from auth_module.plugins.pn532_reader import Pn532Error, Pn532Link


def test_commands_encode_as_in_the_user_manual() -> None:
    assert pf.encode(pf.GET_FIRMWARE_VERSION) == bytes.fromhex("0000FF02FED4022A00")
    assert pf.encode(pf.IN_LIST_PASSIVE_TARGET, b"\x01\x00") == bytes.fromhex(
        "0000FF04FCD44A0100E100")
    assert pf.encode(pf.SAM_CONFIGURATION, b"\x01\x14\x01") == bytes.fromhex(
        "0000FF05FBD4140114010200")
    assert pf.checksum(b"\xd4\x4a\x01\x00") == 0xE1


def test_decoder_finds_frames_in_noise_and_across_reads() -> None:
    stream = (b"\x55\xaa\x13" + pf.ACK + bytes.fromhex("0000FF06FAD50332010607E800")
              + pf.NACK + bytes.fromhex("0000FF01FF7F8100"))
    decoder = pf.FrameDecoder()
    frames: list[pf.Frame] = []
    for i in range(len(stream)):  # one byte at a time: a slow UART
        frames += decoder.feed(stream[i:i + 1])
    assert frames == [pf.Ack(), pf.Info(0xD5, b"\x03\x32\x01\x06\x07"), pf.Nack(),
                      pf.ErrorFrame()]
    assert decoder.noise == 3
    assert pf.parse_firmware(frames[1].data[1:]) == "PN532 v1.6"  # type: ignore[union-attr]


@pytest.mark.parametrize(("frame", "reason"), [
    ("0000FF06FBD50332010607E800", "length checksum"),
    ("0000FF06FAD50332010607E900", "data checksum"),
])
def test_a_bad_checksum_costs_one_frame(frame: str, reason: str) -> None:
    decoder = pf.FrameDecoder()
    frames = decoder.feed(bytes.fromhex(frame) + pf.encode(0x4B, b"\x00", tfi=pf.PN532))
    assert isinstance(frames[0], pf.BadFrame) and reason in frames[0].reason
    assert frames[-1] == pf.Info(0xD5, b"\x4b\x00")


def test_extended_frame_and_incomplete_input() -> None:
    body = bytes([0xD5, 0x4B]) + bytes(range(10))
    frame = (b"\x00\x00\xff\xff\xff\x00" + bytes([len(body), pf.checksum(bytes([0, len(body)]))])
             + body + bytes([pf.checksum(body), 0]))
    decoder = pf.FrameDecoder()
    assert decoder.feed(frame[:-3]) == []
    assert decoder.feed(frame[-3:]) == [pf.Info(0xD5, body[1:])]


def test_targets_with_4_7_and_10_byte_uids() -> None:
    assert pf.parse_targets(b"\x00") == []
    [classic] = pf.parse_targets(bytes.fromhex("0101000408" "04" "A1B2C3D4"))
    assert classic.uid_hex == "A1B2C3D4" and classic.sel_res == 0x08
    [ntag] = pf.parse_targets(bytes.fromhex("0101004400" "07" "04A1B2C3D4E5F6"))
    assert ntag.uid_hex == "04A1B2C3D4E5F6"
    [desfire] = pf.parse_targets(bytes.fromhex("0101034420" "0A" "04112233445566778899"
                                               "067577810280"))
    assert desfire.uid_hex == "04112233445566778899"


@pytest.mark.parametrize("answer", ["", "05", "0101000408", "0101000408" "05" "A1B2C3D4E5",
                                    "0101000408" "04" "A1B2C3", "0101034420" "04" "A1B2C3D4" "09"])
def test_answers_that_do_not_add_up_are_refused(answer: str) -> None:
    with pytest.raises(ValueError):
        pf.parse_targets(bytes.fromhex(answer))


# --- the link on a scripted port (no pty, no waiting) ------------------------------------------


class ScriptedPort:
    """A serial port whose board answers each write with the next scripted bytes."""

    def __init__(self, *answers: bytes) -> None:
        self.answers = list(answers)
        self.written: list[bytes] = []
        self._pending = b""

    @property
    def in_waiting(self) -> int:
        return len(self._pending)

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.answers:
            self._pending += self.answers.pop(0)

    def read(self, size: int = 1) -> bytes:
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def reset_input_buffer(self) -> None:
        self._pending = b""


def answer(code: int, data: bytes) -> bytes:
    return pf.encode(code, data, tfi=pf.PN532)


def test_link_sends_the_command_again_after_a_nack() -> None:
    card = bytes.fromhex("0101000408" "04" "A1B2C3D4")
    port = ScriptedPort(pf.NACK, pf.ACK + answer(0x4B, card))
    link = Pn532Link(port)
    target = link.poll()
    assert target is not None and target.uid_hex == "A1B2C3D4"
    assert port.written == [pf.encode(0x4A, b"\x01\x00")] * 2


def test_link_error_frame_and_malformed_answer_raise() -> None:
    link = Pn532Link(ScriptedPort(pf.ACK + bytes.fromhex("0000FF01FF7F8100")))
    with pytest.raises(Pn532Error, match="InListPassiveTarget: error frame"):
        link.poll()
    link = Pn532Link(ScriptedPort(pf.ACK + answer(0x4B, b"\x01\x01\x00")))
    with pytest.raises(Pn532Error, match="cut short"):
        link.poll()


def test_link_initialise_wakes_the_board_first() -> None:
    port = ScriptedPort(b"", b"", pf.ACK + answer(0x15, b""),
                        pf.ACK + answer(0x03, b"\x32\x01\x06\x07"), pf.ACK + answer(0x33, b""))
    assert Pn532Link(port).initialise() == "PN532 v1.6"
    assert port.written[0] == pf.ACK       # abort whatever the board was doing
    assert port.written[1] == pf.WAKE_UP   # 0x55 and zeros
    assert [w[6] for w in port.written[2:]] == [0x14, 0x02, 0x32]
