"""The module as its own process with in-process plugins only: an RDM6300 on a pty as the
token provider and an allow list as the only validator; and the one-line exits (status 2)
for an unknown plugin and a bad plugin option."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from auth_module.bus import BusClient
from auth_module.plugins.serial_reader import rdm6300_frame
from simulators.broker import Mosquitto

from .harness import AUTH_MODULE, DEADLINE_S, ScriptedEvse, StatusLog, wait_until

pytest.importorskip("serial")

CARD = "0A001B2C3D"      # in the allow list
STRANGER = "1100A2B3C4"  # not in it: Unknown -> Rejected

TOKENS = f"""\
tokens:
  - id_token: {CARD.lower()}    # compared case-insensitively
    parent_id_token: DEPOT
"""


def station(tmp_path: Path, *, mqtt: dict[str, Any] | None = None,
            providers: list[dict[str, Any]], validators: list[dict[str, Any]]) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump({
        "mqtt": mqtt or {"host": "127.0.0.1", "port": 1883, "prefix": "everest/"},
        "module_id": "auth",
        "config": {"selection_algorithm": "PlugEvents", "connection_timeout": 5},
        "connections": {
            "token_provider": providers,
            "token_validator": validators,
            "evse_manager": [{"module_id": "evse_manager_1", "implementation_id": "evse"}],
        },
        "reservations": {"store": str(tmp_path / "reservations.json")},
        "logging": {"level": "debug", "format": "json", "show_tokens": True},
    }, sort_keys=False))
    return path


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


class CardOnReader:
    """Holds a card on the RDM6300: its frame every 0.1 s until taken away (like the real
    reader, which repeats while the card is in the field; the debounce makes it one swipe)."""

    def __init__(self, master: int, uid: str) -> None:
        self.master, self.frame = master, rdm6300_frame(uid)
        self._away = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._away.is_set():
            os.write(self.master, self.frame)
            self._away.wait(0.1)

    def __enter__(self) -> CardOnReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._away.set()
        self._thread.join()


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_swipe_on_the_serial_reader_starts_charging(broker: Mosquitto, tmp_path: Path,
                                                      pty: tuple[int, str]) -> None:
    master, port = pty
    (tmp_path / "tokens.yaml").write_text(TOKENS)
    path = station(tmp_path, mqtt={"host": broker.host, "port": broker.port, "prefix": "everest/"},
                   providers=[{"plugin": "serial", "port": port, "protocol": "rdm6300"}],
                   validators=[{"plugin": "allow_list", "file": "tokens.yaml"}])

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
        # the provider is started once the module is ready; wait until it has the port open
        wait_until(lambda: f"reading {port}" in log_path.read_text(), 10.0,
                   "the serial plugin to open the pty")

        evse.plug_in()
        with CardOnReader(master, STRANGER):
            statuses.wait(STRANGER, "Rejected")
        with CardOnReader(master, CARD):
            statuses.wait(CARD, "UsedToStart")
            time.sleep(0.5)  # the card stays a little longer: still one swipe

        assert statuses.of(STRANGER) == ["Processing", "Rejected"]
        assert statuses.of(CARD) == ["Processing", "Accepted", "UsedToStart"]
        [used] = statuses.messages(CARD, "UsedToStart")
        assert used["token"]["id_token"] == {"value": CARD, "type": "ISO14443"}
        assert used["token"]["authorization_type"] == "RFID"
        assert used["token"]["parent_id_token"]["value"] == "DEPOT"
        [response] = [a for c, a in evse.received if c == "authorize_response"]
        assert response["validation_result"]["authorization_status"] == "Accepted"
        assert response["provided_token"]["id_token"]["value"] == CARD
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


def run_module(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AUTH_MODULE, "--config", str(path)], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.timeout(60)
def test_unknown_plugin_exits_2_with_one_line(tmp_path: Path) -> None:
    path = station(tmp_path, providers=[{"plugin": "stdin"}],
                   validators=[{"module_id": "validator", "implementation_id": "main"},
                               {"plugin": "alow_list", "file": "tokens.yaml"}])
    done = run_module(path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    line = done.stderr.strip()
    assert line.startswith(f"auth-module: {path}: connections.token_validator[1]: ")
    assert "unknown validator plugin 'alow_list'" in line
    assert "allow_list" in line and "ocpp16" in line  # the names that are installed


@pytest.mark.timeout(60)
def test_bad_plugin_option_exits_2_with_one_line(tmp_path: Path) -> None:
    path = station(tmp_path, providers=[{"plugin": "serial", "port": "/dev/serial0",
                                         "protocol": "wiegand"}],
                   validators=[{"module_id": "validator", "implementation_id": "main"}])
    done = run_module(path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    line = done.stderr.strip()
    assert line.startswith(f"auth-module: {path}: connections.token_provider[0].protocol: ")
    assert "'wiegand'" in line
