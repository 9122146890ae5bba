"""``auth-demo --fast`` end to end: a real broker, the module as a process, every scene."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from simulators.broker import Mosquitto, free_port
from simulators.demo import mqtt_broker_answers
from tests.integration.harness import RawClient
from tests.integration.wire_shapes import envelope_problems

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PROJECT = Path(__file__).resolve().parents[2]
AUTH_DEMO = str(Path(sys.executable).with_name("auth-demo"))
RUN_TIMEOUT_S = 60


def _station_copy(tmp_path: Path, port: int) -> Path:
    """config/demo.yaml pointing at ``port``, with config/tokens.yaml beside it."""
    station = yaml.safe_load((PROJECT / "config" / "demo.yaml").read_text())
    station["mqtt"]["port"] = port
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(station, sort_keys=False))
    shutil.copy(PROJECT / "config" / "tokens.yaml", tmp_path / "tokens.yaml")
    return path


def _run_demo(tmp_path: Path, station: Path) -> subprocess.CompletedProcess[str]:
    # cwd = tmp_path: the demo writes .state/ there, not into the project
    return subprocess.run([AUTH_DEMO, "--config", str(station), "--fast"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def _explain(proc: subprocess.CompletedProcess[str], tmp_path: Path) -> str:
    log = tmp_path / ".state" / "demo-module.log"
    module_log = log.read_text(errors="replace")[-3000:] if log.exists() else "(no module log)"
    return (f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            f"\n--- module log (tail)\n{module_log}")


def _lines_with(text: str, pattern: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(pattern, line)]


def _group(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in {text!r}"
    return found.group(1)


@pytest.fixture
def stray_listener() -> Iterator[int]:
    """A port held by a TCP server that accepts connections but never speaks MQTT."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    try:
        yield int(srv.getsockname()[1])
    finally:
        srv.close()


def test_demo_plays_every_scene_against_a_running_broker(
        broker: Mosquitto, tmp_path: Path) -> None:
    station = _station_copy(tmp_path, broker.port)
    proc = _run_demo(tmp_path, station)
    why = _explain(proc, tmp_path)
    out = proc.stdout

    assert proc.returncode == 0, why
    assert "Traceback" not in out + proc.stderr, why
    assert "unexpected" not in out, why
    assert f"using the MQTT broker already running at 127.0.0.1:{broker.port}" in out, why
    assert (tmp_path / ".state" / "demo-module.log").is_file()
    assert str(tmp_path / ".state" / "demo-module.log") in out, why

    # scene 1: start and stop with the same card
    assert _lines_with(out, r"auth -> UsedToStart on EVSE 1"), why
    assert _lines_with(out, r"auth -> EVSE 1: authorize_response Accepted"), why
    assert _lines_with(out, r"auth -> UsedToStop on EVSE 1: the card that started"), why
    assert _lines_with(out, r"stop_transaction \(reason Local, card VALID_RFID_1\)"), why
    # scene 2: an unknown card
    assert _lines_with(out, r"auth -> Rejected: the validator does not know the card"), why
    # scene 3: the connection timeout
    assert _lines_with(out, r"set_connection_timeout -> null"), why
    timed_out = _lines_with(out, r"auth -> TimedOut after [0-9.]+ s")
    assert timed_out, why
    waited = float(_group(r"after ([0-9.]+) s", timed_out[0]))
    assert 2.5 <= waited <= 6.0, why
    # scene 4: a card of the same group stops EVSE 1's transaction
    assert _lines_with(out, r"stop_transaction \(reason Local, card VALID_RFID_3\)"), why
    assert _lines_with(out, r"auth -> UsedToStop on EVSE 1: no EVSE is free"), why
    # scene 5: the reservation
    assert "auth answered reserve_now -> Accepted" in out, why
    assert "reservation_update: reservation 4242 Placed" in out, why
    assert _lines_with(out, r"auth -> Rejected: EVSE 2 is reserved for another card"), why
    assert "authorize_response Accepted (reservation 4242)" in out, why
    assert "Reservation 4242 was used: accepted and used by VALID_RFID_2." in out, why
    # scene 6: stop_transaction_on_reswipe false, after a restart of the module
    assert _lines_with(out, r"auth-module restarted \(pid \d+\) and ready again"), why
    assert _lines_with(out, r"auth -> UsedToReauthorize on EVSE 1: the card belongs to this "
                            r"charge, which goes on"), why
    assert "EVSE 1 received no stop_transaction: still charging." in out, why

    assert "Done: every scene went as expected." in out, why
    assert "The auth module stopped on SIGTERM with exit status 0." in out, why
    # the demo leaves a broker it did not start alone
    assert broker.running
    assert mqtt_broker_answers(broker.host, broker.port) is True


def test_everything_published_under_the_prefix_during_the_demo_is_an_everest_envelope(
        broker: Mosquitto, tmp_path: Path) -> None:
    """Record every message under ``everest/`` while the demo plays (module and simulators)
    and check each against the framework's shapes (EVEREST-MANAGER.md §0, §(e))."""
    station = _station_copy(tmp_path, broker.port)
    recorder = RawClient(broker.host, broker.port, filters=("everest/#",)).start()
    try:
        proc = _run_demo(tmp_path, station)
    finally:
        recorder.stop()
    assert proc.returncode == 0, _explain(proc, tmp_path)

    bad = [(topic, problems, payload[:300]) for _, topic, payload in recorder.messages
           if (problems := envelope_problems("everest/", topic, payload))]
    assert bad == [], bad
    seen = {(json.loads(payload)["msg_type"], topic.split("/")[2]) for _, topic, payload in recorder.messages}
    # the module's own: its statuses, its calls, its answers, its ready
    for kind in ("Var", "Cmd", "CmdResult", "ModuleReady"):
        assert (kind, "auth") in seen, (kind, sorted(seen))
    # and the simulators': session events, answers to the module's calls, their ready
    for kind in ("Var", "CmdResult", "ModuleReady"):
        assert (kind, "evse_manager_1") in seen, (kind, sorted(seen))
    assert len(recorder.messages) > 50


def test_the_envelope_checker_catches_what_ends_an_everest_process() -> None:
    """The checker above is no rubber stamp: the shapes this project used to send fail it."""
    def problems(topic: str, env: dict[str, object]) -> list[str]:
        return envelope_problems("everest/", topic, json.dumps(env).encode())

    answer = "everest/modules/auth/impl/main/cmd/set_connection_timeout/response/ocpp"
    old_error = {"msg_type": "CmdResult", "data": {"type": "result", "data": {
        "id": "1", "origin": "auth", "error": {"event": "SchemaValidationFailed", "msg": "m"}}}}
    new_error = {"msg_type": "CmdResult", "data": {"type": "result", "data": {
        "id": "1", "origin": "auth",
        "error": {"__everest__error_type": "SchemaValidationError", "__everest__error_msg": "m"}}}}
    assert problems(answer, old_error) and problems(answer, new_error) == []
    fault = "everest/modules/evse_manager_1/impl/evse/error/evse_manager/Inoperative"
    old_clear = {"msg_type": "ClearError", "data": {
        "type": "evse_manager/Inoperative", "message": "", "severity": "High", "state": "Active",
        "origin": {"module_id": "evse_manager_1", "implementation_id": "evse"},
        "timestamp": "2026-01-01T00:00:00.000Z", "uuid": "u"}}
    assert problems(fault, old_clear)
    new_clear = {"msg_type": "ClearError", "data": {
        **old_clear["data"], "state": "ClearedByModule",  # type: ignore[dict-item]
        "description": "", "sub_type": "", "vendor_id": ""}}
    assert problems(fault, new_clear) == []
    assert problems("everest/modules/auth/ready", {"msg_type": "Ready", "data": True})
    assert problems("everest/modules/auth/impl/main/var/x", {"msg_type": "Var", "data": 5})


def test_demo_starts_its_own_broker_beside_a_port_squatter(
        stray_listener: int, tmp_path: Path) -> None:
    station = _station_copy(tmp_path, stray_listener)
    proc = _run_demo(tmp_path, station)
    why = _explain(proc, tmp_path)
    out = proc.stdout

    assert proc.returncode == 0, why
    assert "unexpected" not in out, why
    line = _lines_with(out, rf"^Broker: 127\.0\.0\.1:{stray_listener} is taken by something "
                            r"that is not an MQTT broker")
    assert line, why
    port = int(_group(r"started mosquitto on 127\.0\.0\.1:(\d+)", line[0]))
    assert port != stray_listener
    assert f"The demo's mosquitto on 127.0.0.1:{port} stopped." in out, why
    assert "Done: every scene went as expected." in out, why
    # the temporary station copy is gone, the user's file is untouched
    copy = _group(r"temporary copy of the station file: (\S+)", line[0])
    assert not Path(copy).exists()
    assert yaml.safe_load(station.read_text())["mqtt"]["port"] == stray_listener
    assert mqtt_broker_answers("127.0.0.1", port) is None


def test_broker_probe_tells_a_broker_from_a_squatter_and_from_nothing(
        broker: Mosquitto, stray_listener: int) -> None:
    assert mqtt_broker_answers(broker.host, broker.port) is True
    assert mqtt_broker_answers("127.0.0.1", stray_listener, timeout=0.3) is False
    assert mqtt_broker_answers("127.0.0.1", free_port()) is None


def test_a_bad_station_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    station = tmp_path / "demo.yaml"
    station.write_text("mqtt:\n  port: 0\nconnections: {}\n")
    proc = subprocess.run([AUTH_DEMO, "--config", str(station), "--fast"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "mqtt.port" in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_demo_prints_the_console_first_and_play_mode_drives_the_simulators(
        broker: Mosquitto, tmp_path: Path) -> None:
    """``auth-demo --play``: the console's URL and keys come first; the page's demo buttons
    plug a car in and swipe a card, and the station stays up until Ctrl-C."""
    import json
    import signal
    import ssl
    import time

    import httpx

    station = _station_copy(tmp_path, broker.port)
    proc = subprocess.Popen([AUTH_DEMO, "--config", str(station), "--play"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line.rstrip())
            if line.startswith("Playing:") or len(seen) > 40:
                break
        text = "\n".join(seen)
        assert seen[1].startswith("Console: open https://127.0.0.1:"), text
        url = _group(r"open (https://127\.0\.0\.1:\d+/)", seen[1])
        viewer = _group(r"viewer key \(watch only\): (amk_\S+)", text)
        admin = _group(r"admin key .*: (amk_\S+)", text)
        ctx = ssl.create_default_context(
            cafile=str(tmp_path / ".state" / "demo-station.console.pem"))
        with httpx.Client(base_url=url, verify=ctx, timeout=10,
                          headers={"Authorization": f"Bearer {admin}"}) as client:
            assert client.post("/api/v1/demo/evses/1/plug-in").status_code == 202
            assert client.post("/api/v1/demo/swipe",
                               json={"id_token": "VALID_RFID_1"}).status_code == 202
            end = time.monotonic() + 10
            while time.monotonic() < end:
                state = json.loads(client.get("/api/v1/station").content)
                if state["evses"] and state["evses"][0]["state"] == "charging":
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"EVSE 1 not charging: {state['evses'][0]}")
            viewer_headers = {"Authorization": f"Bearer {viewer}"}
            assert client.post("/api/v1/demo/swipe", json={"id_token": "X"},
                               headers=viewer_headers).status_code == 403
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, "\n".join(seen) + rest
    assert "Traceback" not in rest
