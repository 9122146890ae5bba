"""The module as its own process with a 13.56 MHz card reader and an allow list: the PN532
emulated on a pty, and a PC/SC reader through pcscd + vpcd. A card presented on a plugged
EVSE gives Processing -> Accepted -> UsedToStart."""

from __future__ import annotations

import os
import queue
import subprocess
import tty
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from auth_module.bus import BusClient
from simulators.broker import Mosquitto

from .harness import AUTH_MODULE, DEADLINE_S, ScriptedEvse, StatusLog, wait_until
from .pcsc_rig import Pcscd, VirtualCard
from .pn532_emulator import NTAG215, Pn532Emulator
from .test_plugins_module import station

CARD = "04A1B2C3D4E5F6"  # a 7-byte NTAG UID, as both readers report it
TOKENS = f"""\
tokens:
  - id_token: {CARD.lower()}
"""


@contextmanager
def running_module(broker: Mosquitto, tmp_path: Path,
                   provider: dict[str, Any]) -> Iterator[tuple[ScriptedEvse, StatusLog, Path]]:
    (tmp_path / "tokens.yaml").write_text(TOKENS)
    path = station(tmp_path, mqtt={"host": broker.host, "port": broker.port, "prefix": "everest/"},
                   providers=[provider],
                   validators=[{"plugin": "allow_list", "file": "tokens.yaml"}])
    settings = yaml.safe_load(path.read_text())
    settings["logging"]["show_tokens"] = False  # the default: UIDs are masked in the log
    path.write_text(yaml.safe_dump(settings, sort_keys=False))

    def bus(module_id: str) -> BusClient:
        return BusClient(module_id=module_id, host=broker.host, port=broker.port,
                         prefix="everest/")

    evse = ScriptedEvse(bus, "evse_manager_1", 1, [(1, "cCCS2")])
    evse.start()
    statuses = StatusLog()
    ready: queue.Queue[bool] = queue.Queue()
    observer = bus("test_observer")
    observer.subscribe_var("auth", "main", "token_validation_status", statuses.add)
    observer.subscribe_raw("everest/modules/auth/ready", lambda _t, _p: ready.put(True))
    observer.start()
    assert observer.wait_connected(DEADLINE_S)
    log_path = tmp_path / "auth-module.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([AUTH_MODULE, "--config", str(path)], stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        ready.get(timeout=15)
        assert proc.poll() is None, log_path.read_text()[-2000:]
        yield evse, statuses, log_path
    finally:
        proc.terminate()
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        observer.stop()
        evse.stop()
    assert code == 0, log_path.read_text()[-2000:]


def check_started(evse: ScriptedEvse, statuses: StatusLog,
                  present: Callable[[], AbstractContextManager[Any]]) -> None:
    evse.plug_in()
    with present():
        statuses.wait(CARD, "UsedToStart")
    assert statuses.of(CARD) == ["Processing", "Accepted", "UsedToStart"]
    [used] = statuses.messages(CARD, "UsedToStart")
    assert used["token"]["id_token"] == {"value": CARD, "type": "ISO14443"}
    assert used["token"]["authorization_type"] == "RFID"
    [response] = [a for c, a in evse.received if c == "authorize_response"]
    assert response["validation_result"]["authorization_status"] == "Accepted"


def check_masked(log_path: Path) -> None:
    text = log_path.read_text()
    assert "card read" in text
    assert CARD not in text and CARD.lower() not in text  # personal data: masked


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_card_on_the_pn532_starts_charging(broker: Mosquitto, tmp_path: Path) -> None:
    pytest.importorskip("serial")
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    port = os.ttyname(slave)
    board = Pn532Emulator(master).start()
    try:
        with running_module(broker, tmp_path, {"plugin": "pn532", "port": port}) as (
                evse, statuses, log_path):
            wait_until(lambda: "PN532 v1.6" in log_path.read_text(), 15.0,
                       "the pn532 plugin to initialise the board")

            @contextmanager
            def card_on_board() -> Iterator[None]:
                board.card = NTAG215
                try:
                    yield
                    board.wait_polls(10)  # held a little longer: still one token
                finally:
                    board.card = None

            check_started(evse, statuses, card_on_board)
        check_masked(log_path)
    finally:
        board.stop()
        os.close(master)
        os.close(slave)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_card_on_the_pcsc_reader_starts_charging(broker: Mosquitto, tmp_path: Path,
                                                   pcscd: Pcscd) -> None:
    with running_module(broker, tmp_path, {"plugin": "pcsc", "reader": "PCD 00 01"}) as (
            evse, statuses, log_path):
        wait_until(lambda: "reading Virtual PCD 00 01" in log_path.read_text(), 15.0,
                   "the pcsc plugin to find the reader")
        check_started(evse, statuses, lambda: VirtualCard(pcscd.port, CARD, slot=1))
    check_masked(log_path)
