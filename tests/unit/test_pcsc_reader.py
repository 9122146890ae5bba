"""The pure parts of the ``pcsc`` provider and its one-line refusal without pyscard."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from auth_module.plugins import pcsc_reader
from auth_module.plugins.base import PluginContext
from auth_module.plugins.loader import PluginError
from auth_module.plugins.pcsc_reader import choose_readers, uid_from_answer

READERS = ["ACS ACR122U PICC Interface 00 00", "Virtual PCD 00 00", "Virtual PCD 00 01"]


def test_choose_readers() -> None:
    assert choose_readers(READERS, None) == READERS
    assert choose_readers(READERS, "acr122") == [READERS[0]]
    assert choose_readers(READERS, "Virtual") == ["Virtual PCD 00 00"]  # the first one only
    assert choose_readers(READERS, "Omnikey") == []


def test_uid_from_answer() -> None:
    uid = [0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6]
    assert uid_from_answer([*uid, 0x90, 0x00]) == "04A1B2C3D4E5F6"
    assert uid_from_answer([0x6A, 0x81]) is None
    assert uid_from_answer([0x90, 0x00]) is None  # no UID at all
    assert uid_from_answer([0xA1, 0xB2, 0x63, 0x00]) is None


def test_without_pyscard_the_error_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "smartcard", None)  # import smartcard -> ImportError
    with pytest.raises(PluginError) as err:
        pcsc_reader.create({"reader": "ACR122"}, PluginContext(base_dir=Path(".")))
    assert "pyscard" in str(err.value) and "auth-module[pcsc]" in str(err.value)
    assert "\n" not in str(err.value)


def test_options() -> None:
    assert pcsc_reader.PcscOptions.model_validate({}).reader is None
    with pytest.raises(ValidationError):
        pcsc_reader.PcscOptions.model_validate({"readers": "ACR122"})
