"""The command line (CONTRACT.md §1) and the station file (§2), driven as a user would.

``auth-module --config PATH`` is run as its own process: bad station files must end in exit
status 2 with one readable line on stderr, a good one must start, a signal must end it with
0, a broker that is not there yet must be waited for, and an EVSE manager that answers
``get_evse`` with the wrong evse id must stop it from starting.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.broker import Mosquitto, free_port

from .harness import AUTH_MODULE, RawClient, Rig, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RUN_TIMEOUT_S = 20.0  # a bad station file is refused long before this


def run_module(*args: str, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AUTH_MODULE, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def log_records(text: str) -> list[dict[str, Any]]:
    """The module's JSON log lines (lines that are not JSON objects are skipped)."""
    records = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def not_json_lines(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        if not isinstance(value, dict):
            out.append(line)
    return out


# --- --help ------------------------------------------------------------------------------------


def test_help_exits_zero_and_mentions_config() -> None:
    done = run_module("--help")
    assert done.returncode == 0, done.stderr
    assert "--config" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


# --- bad station files -------------------------------------------------------------------------


def valid_station() -> dict[str, Any]:
    """A complete, valid station file (as data) that the cases below break one way each."""
    return {
        "mqtt": {"host": "127.0.0.1", "port": 1883, "prefix": "everest/"},
        "module_id": "auth",
        "config": {"selection_algorithm": "PlugEvents", "connection_timeout": 30},
        "connections": {
            "token_provider": [{"module_id": "rfid_reader", "implementation_id": "main"}],
            "token_validator": [{"module_id": "validator", "implementation_id": "main"}],
            "evse_manager": [{"module_id": "evse_manager_1", "implementation_id": "evse"}],
        },
    }


def station_with(change: Callable[[dict[str, Any]], None]) -> str:
    data = valid_station()
    change(data)
    return yaml.safe_dump(data, sort_keys=False)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        del node[last]
    return change


# (case id, file text or None for "no file", words the error line must contain)
BAD_STATIONS: list[tuple[str, str | None, list[str]]] = [
    ("missing-file", None, []),
    ("invalid-yaml", "mqtt:\n  host: [127.0.0.1\n  port: 1883\n", []),
    ("top-level-list", "- mqtt\n- connections\n", []),
    ("unknown-top-level-key", station_with(_set("frobnicate", 1)), ["frobnicate"]),
    ("unknown-config-key", station_with(_set("config.frobnicate", True)), ["frobnicate"]),
    ("port-not-a-number", station_with(_set("mqtt.port", "abc")), ["port"]),
    ("port-out-of-range", station_with(_set("mqtt.port", 70000)), ["port"]),
    ("connection-timeout-zero", station_with(_set("config.connection_timeout", 0)),
     ["connection_timeout"]),
    ("selection-user-input", station_with(_set("config.selection_algorithm", "UserInput")),
     ["selection_algorithm"]),
    ("no-evse-manager", station_with(_drop("connections.evse_manager")), ["evse_manager"]),
    ("empty-evse-manager", station_with(_set("connections.evse_manager", [])), ["evse_manager"]),
]


@pytest.mark.parametrize("text,words", [pytest.param(t, w, id=i) for i, t, w in BAD_STATIONS])
def test_bad_station_file_exits_2_with_one_line(tmp_path: Path, text: str | None,
                                                words: list[str]) -> None:
    path = tmp_path / "station.yaml"
    if text is not None:
        path.write_text(text)
    done = run_module("--config", str(path))
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {done.stderr!r}"
    line = lines[0]
    assert str(path) in line, f"the error does not name the file: {line!r}"
    for word in words:
        assert word in line, f"the error does not name {word!r}: {line!r}"


# --- a good station file -----------------------------------------------------------------------

# CONTRACT.md §2, verbatim (only the port is rewritten to the test broker's).
CONTRACT_EXAMPLE = """\
mqtt:
  host: 127.0.0.1          # default 127.0.0.1
  port: 1883               # default 1883
  prefix: everest/         # topic prefix, default "everest/"
module_id: auth            # this module's id on the bus, default "auth"
config:                    # the keys of EVerest's Auth manifest, same names, same defaults
  selection_algorithm: PlugEvents        # PlugEvents | FindFirst (UserInput: refuse with a clear error)
  connection_timeout: 30                 # integer seconds, >= 1
  master_pass_group_id: ""
  prioritize_authorization_over_stopping_transaction: true
  ignore_connector_faults: false
  plug_in_timeout_enabled: false
connections:               # the modules this one talks to, as in an EVerest config
  token_provider:
    - module_id: rfid_reader
      implementation_id: main
  token_validator:
    - module_id: validator
      implementation_id: main
  evse_manager:            # listed in evse id order: the first entry is evse id 1, ...
    - module_id: evse_manager_1
      implementation_id: evse
    - module_id: evse_manager_2
      implementation_id: evse
"""


def test_contract_example_station_starts(broker: Mosquitto, tmp_path: Path) -> None:
    rig = Rig(broker, tmp_path, scripted=True)
    rig.station_path.write_text(CONTRACT_EXAMPLE.replace("port: 1883 ", f"port: {broker.port} ", 1))
    assert f"port: {broker.port} " in rig.station_path.read_text()
    try:
        rig.start_simulators()
        rig.start_module()  # waits for ready
        assert rig.proc is not None and rig.proc.poll() is None
        assert rig.stop_module(signal.SIGTERM) == 0
    finally:
        rig.stop()
    assert "Traceback" not in rig.module_log()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_exits_zero(broker: Mosquitto, tmp_path: Path, sig: signal.Signals) -> None:
    rig = Rig(broker, tmp_path, scripted=True)
    try:
        rig.start()
        assert rig.stop_module(sig) == 0
    finally:
        rig.stop()
    assert "Traceback" not in rig.module_log()


# --- broker down at start ----------------------------------------------------------------------


def retrying(rig: Rig) -> bool:
    """Whether the module logged (as a warning) that it cannot reach the broker and retries."""
    return any(r.get("level") in ("warning", "error")
               and re.search(r"retry|unreachable", str(r.get("event")), re.I)
               for r in log_records(rig.module_log()))


def test_broker_down_at_start_keeps_retrying_then_becomes_ready(tmp_path: Path) -> None:
    broker = Mosquitto(port=free_port())  # not started yet
    rig = Rig(broker, tmp_path, scripted=True,
              extra={"timeouts": {"validator_s": 2.0, "command_s": 1.0}})
    raw: RawClient | None = None
    try:
        rig.write_station()
        proc = rig.start_module(wait_ready=False)

        wait_until(lambda: retrying(rig), 10.0, "a log line saying the module keeps retrying")
        time.sleep(1.5)  # it must keep going, not give up
        assert proc.poll() is None, f"module exited: {rig.module_log()[-2000:]}"

        broker.start()
        raw = RawClient(broker.host, broker.port, filters=("everest/modules/auth/ready",)).start()
        rig.start_simulators()
        wait_until(lambda: raw.on("everest/modules/auth/ready") or proc.poll() is not None,
                   25.0, "ready once the broker is up")
        assert proc.poll() is None, f"module exited: {rig.module_log()[-2000:]}"
        assert rig.stop_module() == 0
    finally:
        if raw is not None:
            raw.stop()
        rig.stop()
        broker.close()
    assert "Traceback" not in rig.module_log()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_waiting_for_the_broker_exits_zero(tmp_path: Path, sig: signal.Signals) -> None:
    broker = Mosquitto(port=free_port())  # never started
    rig = Rig(broker, tmp_path, scripted=True)
    try:
        rig.write_station()
        proc = rig.start_module(wait_ready=False)
        wait_until(lambda: retrying(rig), 10.0, "a log line saying the module keeps retrying")
        proc.send_signal(sig)
        assert proc.wait(15.0) == 0, rig.module_log()[-2000:]
    finally:
        rig.stop()
        broker.close()
    assert "Traceback" not in rig.module_log()


def test_sigterm_while_waiting_for_get_evse_exits_promptly(broker: Mosquitto, tmp_path: Path) -> None:
    """No EVSE manager answers get_evse: a SIGTERM still ends the module at once, not after
    the command timeout (set long here so that waiting for it would fail the bound)."""
    rig = Rig(broker, tmp_path, scripted=True, extra={"timeouts": {"command_s": 30.0}})
    try:
        rig.write_station()  # no simulators: get_evse is never answered
        proc = rig.start_module(wait_ready=False)
        wait_until(lambda: "get_evse" in rig.module_log() or "waiting for EVSE manager"
                   in rig.module_log() or "bus starting" in rig.module_log(), 10.0,
                   "the module to start asking for its EVSEs")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10.0) == 0, rig.module_log()[-2000:]
    finally:
        rig.stop()
    assert "Traceback" not in rig.module_log()


# --- evse id mismatch --------------------------------------------------------------------------


def test_evse_id_mismatch_refuses_to_start(broker: Mosquitto, tmp_path: Path) -> None:
    rig = Rig(broker, tmp_path, scripted=True)
    try:
        rig.write_station()
        rig.start_simulators()
        rig.evse(1).evse_id = 2  # the 1st evse_manager entry answers get_evse with id 2
        proc = rig.start_module(wait_ready=False)
        proc.wait(RUN_TIMEOUT_S)
        assert rig.stop_module() == 2
        assert rig.ready_count == 0
    finally:
        rig.stop()
    text = rig.module_log()
    assert "Traceback" not in text
    lines = not_json_lines(text)  # the log is JSON lines; the error is the one plain line
    assert len(lines) == 1, f"expected one error line, got {lines!r}"
    line = lines[0]
    assert "evse_manager_1" in line, line
    assert re.search(r"\b2\b", line), f"the error does not name evse id 2: {line!r}"
    assert str(rig.station_path) in line, line
