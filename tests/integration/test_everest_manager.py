"""The module under a stand-in for EVerest's manager (CONTRACT.md §8).

The module folder is written by ``auth-module everest-module``; the stand-in
(:mod:`tests.integration.everest_manager`) spawns it as the manager does (``python3
module.py``, no arguments, the manager's environment, another working directory, and a
``python3`` on PATH that does not have this package), answers its configuration request as
the manager builds the answer, and publishes GlobalReady once the module said ModuleReady.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from auth_module.bus import BusClient, CommandError
from auth_module.everest.env import ManagerEnv
from auth_module.everest.folder import everest_manifest, write_module_folder
from auth_module.everest.handshake import ConfigRequester
from auth_module.everest.settings import module_config_of
from simulators.broker import Mosquitto, free_port
from simulators.evse_manager import EvseManagerSim
from simulators.token_provider import TokenProviderSim
from simulators.validator import ValidatorSim

from .everest_manager import ManagerStandIn, ModuleSpec
from .harness import StatusLog, wait_until

pytestmark = pytest.mark.integration

BASE_PYTHON = Path(sys.base_prefix) / "bin" / "python3"
REQUEST = (b'{"data":{"origin":"auth","request":{"type":"Module"},"type":"Get"},'
           b'"msg_type":"ConfigurationRequest"}')
TOKEN = "VALID_RFID_1"


def _sim_manifest(interface: str, impl: str) -> dict[str, Any]:
    return {"description": "simulator", "provides": {impl: {"interface": interface,
                                                             "description": "simulated"}},
            "metadata": {"license": "https://opensource.org/licenses/Apache-2.0",
                         "authors": ["tests"]}}


SIM_MANIFESTS = {
    "DummyTokenProviderManual": _sim_manifest("auth_token_provider", "main"),
    "DummyTokenValidator": _sim_manifest("auth_token_validator", "main"),
    "EvseManager": _sim_manifest("evse_manager", "evse"),
}


def charger(**config_module: Any) -> dict[str, ModuleSpec]:
    """An EVerest config: PyAuth with one reader, one validator and two EVSE managers, the
    one listed first (evse id 1) named so that it sorts last."""
    return {
        "auth": ModuleSpec("PyAuth", config_module={
            "connection_timeout": 10, "selection_algorithm": "FindFirst", **config_module},
            connections={
                "token_provider": [{"module_id": "rfid", "implementation_id": "main"}],
                "token_validator": [{"module_id": "validator", "implementation_id": "main"}],
                "evse_manager": [{"module_id": "evse_b", "implementation_id": "evse"},
                                 {"module_id": "evse_a", "implementation_id": "evse"}]}),
        "rfid": ModuleSpec("DummyTokenProviderManual"),
        "validator": ModuleSpec("DummyTokenValidator"),
        "evse_b": ModuleSpec("EvseManager"),
        "evse_a": ModuleSpec("EvseManager"),
    }


@pytest.fixture
def other_python(tmp_path: Path) -> Path:
    """A folder whose ``python3`` is an interpreter without this package."""
    probe = subprocess.run([str(BASE_PYTHON), "-c", "import auth_module"], cwd=tmp_path,
                           capture_output=True, env={"PATH": os.defpath})
    if probe.returncode == 0:
        pytest.skip(f"{BASE_PYTHON} has auth_module: cannot show a foreign python3 on PATH")
    folder = tmp_path / "other-bin"
    folder.mkdir()
    (folder / "python3").symlink_to(BASE_PYTHON)
    return folder


def manager_env(other_python: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith("EV_")}
    env["PATH"] = f"{other_python}:{env.get('PATH', os.defpath)}"
    return env


class Charger:
    """Broker + simulators + the stand-in, with the module folder written into tmp."""

    def __init__(self, broker: Mosquitto, tmp_path: Path, other_python: Path,
                 config: dict[str, ModuleSpec], **stand_in: Any) -> None:
        self.broker, self.tmp_path = broker, tmp_path
        self.modules_dir = tmp_path / "modules"
        self.folder = write_module_folder(self.modules_dir, "PyAuth")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        self.manager = ManagerStandIn(broker.host, broker.port, self.modules_dir, config,
                                      cwd=elsewhere, extra_manifests=SIM_MANIFESTS,
                                      env=manager_env(other_python), **stand_in)
        self.evse_b = EvseManagerSim(self._bus, "evse_b", evse_id=1)
        self.evse_a = EvseManagerSim(self._bus, "evse_a", evse_id=2)
        self.validator = ValidatorSim(self._bus, "validator",
                                      tokens=[{"id_token": TOKEN, "status": "Accepted"}])
        self.provider = TokenProviderSim(self._bus, "rfid")
        self.observer = self._bus("observer")
        self.statuses = StatusLog()

    def _bus(self, module_id: str) -> BusClient:
        return BusClient(module_id=module_id, host=self.broker.host, port=self.broker.port)

    def start(self) -> Charger:
        for sim in (self.evse_b, self.evse_a, self.validator, self.provider):
            sim.start()
        self.observer.subscribe_var("auth", "main", "token_validation_status", self.statuses.add)
        self.observer.start()
        assert self.observer.wait_connected(5) and self.observer.wait_subscribed(5)
        self.manager.start(self.tmp_path)
        return self

    def stop(self) -> None:
        self.manager.stop()
        for sim in (self.evse_b, self.evse_a, self.validator, self.provider):
            sim.stop()
        self.observer.stop()

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.manager.procs["auth"]

    def log(self) -> str:
        return self.manager.log_of("auth")

    def logged(self, event: str) -> bool:
        """Whether the module logged ``event`` (its log is JSON lines: no terminal)."""
        for line in self.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                return True
        return False

    def cmd_times(self, module_id: str, cmd: str) -> list[float]:
        topic = f"modules/{module_id}/impl/evse/cmd/{cmd}"
        with self.manager.lock:
            return [t for t, top, _ in self.manager.messages if top == topic]

    def sigterm(self) -> tuple[int | None, float]:
        started = time.monotonic()
        code = self.manager.terminate("auth")
        return code, time.monotonic() - started


@pytest.fixture
def make_charger(broker: Mosquitto, tmp_path: Path, other_python: Path):  # type: ignore[no-untyped-def]
    made: list[Charger] = []

    def make(config: dict[str, ModuleSpec] | None = None, *, on: Mosquitto | None = None,
             **stand_in: Any) -> Charger:
        c = Charger(on or broker, tmp_path, other_python, config or charger(), **stand_in)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.stop()


@pytest.mark.timeout(90)
def test_started_as_the_manager_starts_it_and_serves_a_token(make_charger: Any) -> None:
    c = make_charger(charger(connection_timeout=2), hold_global_ready=True)
    ready_at = c.manager.wait_ready("auth")

    # module.py re-executed the interpreter recorded when the folder was written
    cmdline = psutil.Process(c.proc.pid).cmdline()
    assert cmdline[:5] == [os.path.abspath(sys.executable), "-P", "-m", "auth_module",
                           "--everest"], cmdline
    with c.manager.lock:
        requests = list(c.manager.requests)
    assert [payload for _, payload in requests] == [REQUEST]
    assert requests[0][0] < ready_at

    # ModuleReady, but no get_evse and no token handling before the manager's GlobalReady
    c.provider.swipe(TOKEN)
    time.sleep(1.5)
    assert c.cmd_times("evse_b", "get_evse") == [] and c.cmd_times("evse_a", "get_evse") == []
    assert c.statuses.of(TOKEN) == []
    assert "token dropped" in c.log()
    with pytest.raises(CommandError) as not_ready:  # answered, in the framework's shape
        c.observer.call("auth", "reservation", "exists_reservation",
                        {"request": {"id_token": TOKEN}}, timeout=10)
    assert not_ready.value.event == "NotReady"
    c.manager.release()
    wait_until(lambda: c.cmd_times("evse_a", "get_evse"), 10, "get_evse to evse_a")
    global_ready = c.manager.global_ready_at
    assert global_ready is not None
    b_calls, a_calls = c.cmd_times("evse_b", "get_evse"), c.cmd_times("evse_a", "get_evse")
    assert b_calls and all(t > global_ready for t in b_calls + a_calls)
    assert b_calls[0] < a_calls[0], "evse id 1 is the first evse_manager connection"

    # FindFirst from the answer: with no car anywhere the token goes to evse id 1 at once
    # (PlugEvents, the station default, would wait for a plug-in)
    wait_until(lambda: c.logged("ready"), 10, "the module's ready log line")
    c.provider.swipe(TOKEN)
    c.statuses.wait(TOKEN, "Accepted", timeout=10)
    wait_until(lambda: [cmd for cmd, _ in c.evse_b.received if cmd == "authorize_response"],
               10, "authorize_response on evse_b")
    assert not [cmd for cmd, _ in c.evse_a.received if cmd == "authorize_response"]
    # connection_timeout 2 from the answer (not 10, not 30): the authorization times out
    authorized = time.monotonic()
    c.statuses.wait(TOKEN, "TimedOut", timeout=15)
    assert time.monotonic() - authorized < 9
    wait_until(lambda: [cmd for cmd, _ in c.evse_b.received if cmd == "withdraw_authorization"],
               5, "withdraw_authorization on evse_b")

    assert c.manager.violations == []
    assert c.proc.poll() is None
    code, took = c.sigterm()
    assert code == 0 and took < 5.0, (code, took, c.log()[-2000:])
    assert "Traceback" not in c.log()


@pytest.mark.timeout(60)
def test_session_events_before_global_ready_are_kept(make_charger: Any) -> None:
    """A car plugged in between ModuleReady and GlobalReady is not forgotten: PlugEvents
    gives the token to that EVSE (evse id 2), not to the first one."""
    c = make_charger(charger(selection_algorithm="PlugEvents"), hold_global_ready=True)
    c.manager.wait_ready("auth")
    assert c.evse_a.plug_in()
    time.sleep(0.5)
    c.manager.release()
    wait_until(lambda: c.logged("ready"), 10, "the module's ready log line")
    c.provider.swipe(TOKEN)
    c.statuses.wait(TOKEN, "Accepted", timeout=10)
    wait_until(lambda: [cmd for cmd, _ in c.evse_a.received if cmd == "authorize_response"],
               10, "authorize_response on evse_a")
    assert not [cmd for cmd, _ in c.evse_b.received if cmd == "authorize_response"]
    assert c.manager.violations == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("extra, key", [
    ({"token_validator_plugins": "[{plugin: no_such_plugin}]"},
     "config_module.token_validator_plugins[0]"),
    ({"token_provider_plugins": "[{plugin"}, "config_module.token_provider_plugins"),
    ({"reservation_store": "/dev/null/reservations.json"}, "config_module.reservation_store"),
])
def test_unusable_configuration_leaves_the_module_alive_and_not_ready(
        make_charger: Any, extra: dict[str, Any], key: str) -> None:
    c = make_charger(charger(**extra))
    wait_until(lambda: "configuration unusable" in c.log(), 15, "the error line")
    time.sleep(1.0)
    assert "auth" not in c.manager.ready_at
    assert c.proc.poll() is None, c.log()
    lines = [line for line in c.log().splitlines() if "configuration unusable" in line]
    assert len(lines) == 1 and key in lines[0], c.log()
    code, took = c.sigterm()
    assert code == 0 and took < 5.0
    assert "Traceback" not in c.log()


@pytest.mark.timeout(60)
def test_no_answer_asks_once_more_then_waits_alive(make_charger: Any) -> None:
    c = make_charger(answer_config=False)
    wait_until(lambda: "after 2 requests" in c.log(), 25,
               "the error line")
    with c.manager.lock:
        times = [t for t, _ in c.manager.requests]
    assert len(times) == 2 and times[1] - times[0] >= 4.5
    time.sleep(1.0)
    assert c.proc.poll() is None and "auth" not in c.manager.ready_at
    code, took = c.sigterm()
    assert code == 0 and took < 5.0


@pytest.mark.timeout(60)
def test_sigterm_while_waiting_for_global_ready(make_charger: Any) -> None:
    c = make_charger(hold_global_ready=True)
    c.manager.wait_ready("auth")
    time.sleep(0.3)
    code, took = c.sigterm()
    assert code == 0 and took < 5.0, c.log()
    assert c.cmd_times("evse_b", "get_evse") == []


@pytest.mark.timeout(60)
def test_a_venv_in_the_module_folder_without_the_package(
        broker: Mosquitto, tmp_path: Path, other_python: Path) -> None:
    """The manager prefers DIR/NAME/.venv/bin/python3; when that venv lacks auth_module,
    module.py still starts the interpreter recorded at generation."""
    c = Charger(broker, tmp_path, other_python, charger())
    subprocess.run([str(BASE_PYTHON), "-m", "venv", "--without-pip", str(c.folder / ".venv")],
                   check=True)
    try:
        c.start()
        c.manager.wait_ready("auth")
        cmdline = psutil.Process(c.proc.pid).cmdline()
        assert cmdline[0] == os.path.abspath(sys.executable)
        code, _ = c.sigterm()
        assert code == 0
    finally:
        c.stop()


def test_module_py_with_no_usable_interpreter_says_so(tmp_path: Path, other_python: Path) -> None:
    folder = write_module_folder(tmp_path, "PyAuth", python=str(tmp_path / "gone" / "python3"))
    run = subprocess.run(["python3", str(folder / "module.py")], cwd=tmp_path,
                         env=manager_env(other_python), capture_output=True, timeout=30)
    assert run.returncode == 1
    err = run.stderr.decode()
    assert "auth-module everest-module" in err and "Traceback" not in err


class SocketMosquitto(Mosquitto):
    """The test broker with a unix socket listener too (EVerest's usual broker)."""

    def _write_conf(self) -> None:
        super()._write_conf()
        self.socket_path = str(self._dir / "mqtt.sock")
        with self.conf_path.open("a") as conf:
            conf.write(f"listener 0 {self.socket_path}\nallow_anonymous true\n")


def test_the_configuration_request_over_the_brokers_unix_socket() -> None:
    with SocketMosquitto() as broker, ManagerStandIn(
            broker.host, broker.port, Path("/nonexistent"), charger(),
            extra_manifests={**SIM_MANIFESTS, "PyAuth": everest_manifest()}) as manager:
        manager.start(Path(broker.conf_path).parent)
        env = ManagerEnv.from_environ({"EV_MODULE": "auth",
                                       "EV_MQTT_BROKER_SOCKET_PATH": broker.socket_path})
        answer = ConfigRequester(env).fetch(threading.Event())
        assert answer is not None
        assert module_config_of(answer, "auth")["module_name"] == "PyAuth"
        assert [p for _, p in manager.requests] == [REQUEST]


@pytest.mark.timeout(60)
def test_broker_down_at_start_is_retried_and_sigterm_still_ends_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EV_")}
    env.update(EV_MODULE="auth", EV_MQTT_EVEREST_PREFIX="everest/",
               EV_MQTT_BROKER_HOST="127.0.0.1", EV_MQTT_BROKER_PORT=str(free_port()))
    log = tmp_path / "auth.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "auth_module", "--everest"], env=env,
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "broker not reachable" in log.read_text(), 15, "the retry line")
        time.sleep(1.5)
        assert proc.poll() is None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(60)
def test_evse_managers_out_of_order_is_one_line_and_the_module_stays(make_charger: Any) -> None:
    config = charger()
    config["auth"].connections["evse_manager"].reverse()  # evse_a (evse id 2) listed first
    c = make_charger(config)
    c.manager.wait_ready("auth")
    wait_until(lambda: "cannot start" in c.log(), 15, "the error line")
    lines = [line for line in c.log().splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "evse_a" in lines[0] and "evse id 2" in lines[0], c.log()
    time.sleep(0.5)
    assert c.proc.poll() is None
    code, took = c.sigterm()
    assert code == 0 and took < 5.0


@pytest.mark.timeout(60)
def test_the_module_on_the_brokers_unix_socket(make_charger: Any) -> None:
    """EV_MQTT_BROKER_SOCKET_PATH, EVerest's usual broker: the configuration request and the
    module's own bus both go over the socket."""
    with SocketMosquitto() as broker:
        c = make_charger(on=broker, socket_path=broker.socket_path)
        c.manager.wait_ready("auth")
        wait_until(lambda: c.logged("ready"), 10, "the module's ready log line")
        c.provider.swipe(TOKEN)
        c.statuses.wait(TOKEN, "Accepted", timeout=10)
        assert f"unix:{broker.socket_path}" in c.log()
        code, took = c.sigterm()
        assert code == 0 and took < 5.0
