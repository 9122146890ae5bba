"""A station under test: real broker, simulators on the bus, the module as its own process.

Tests build a :class:`Rig` with the EVSEs, validators and config they need; the module is
started the way users start it (the ``auth-module`` console script with ``--config``), and
the test watches the bus like any other module would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auth_module.bus import BusClient
from simulators.broker import Mosquitto
from simulators.evse_manager import EvseManagerSim
from simulators.token_provider import TokenProviderSim
from simulators.validator import ValidatorSim

AUTH_MODULE = str(Path(sys.executable).with_name("auth-module"))
DEADLINE_S = 5.0  # generous: a loaded CI machine must not fail a correct module


def wait_until(predicate: Callable[[], Any], timeout: float = DEADLINE_S,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it is truthy; fail with ``message`` after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(0.01)


@dataclass
class ValidatorSpec:
    module_id: str
    tokens: list[dict[str, Any]] = field(default_factory=list)
    unknown_status: str = "Invalid"


@dataclass
class StatusLog:
    """Every ``token_validation_status`` the module published, in order."""

    entries: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, value: dict[str, Any]) -> None:
        with self.lock:
            self.entries.append((value["token"]["id_token"]["value"], value["status"], value))

    def of(self, token: str) -> list[str]:
        with self.lock:
            return [s for t, s, _ in self.entries if t == token]

    def messages(self, token: str, status: str) -> list[dict[str, Any]]:
        with self.lock:
            return [v for t, s, v in self.entries if t == token and s == status]

    def expect(self, token: str, expected: list[str]) -> None:
        """EVerest's StrictMock, per token value: exactly ``expected``, in this order.

        Waits until that many statuses were published (failing at once on a wrong one). The
        only thing allowed after them is the TimedOut that the authorization timer publishes
        ``connection_timeout`` after an authorization that no transaction followed (EVerest's
        C++ tests end before it fires).
        """
        n = len(expected)
        try:
            wait_until(lambda: len(self.of(token)) >= n
                       or self.of(token) != expected[:len(self.of(token))],
                       message=f"{expected} for {token}")
        except AssertionError:
            pass
        got = self.of(token)
        tail = got[n:]
        tail_ok = not tail or (expected[-1] == "UsedToStart" and tail == ["TimedOut"])
        assert got[:n] == expected and tail_ok, f"statuses of {token}: {got}, expected {expected}"

    def wait(self, token: str, status: str, count: int = 1, timeout: float = DEADLINE_S) -> None:
        wait_until(lambda: self.of(token).count(status) >= count, timeout,
                   f"{count}x {status} for {token} (seen {self.of(token)})")


class ScriptedEvse:
    """An EVSE manager played by the test itself: it answers every command, records it, and
    publishes exactly the session events the test asks for (EVerest's unit tests inject
    events by hand; this keeps those scenarios exact over the bus)."""

    def __init__(self, bus_factory: Callable[[str], BusClient], module_id: str, evse_id: int,
                 connectors: list[tuple[int, str]]) -> None:
        self.module_id, self.evse_id, self.connectors = module_id, evse_id, connectors
        self.bus = bus_factory(module_id)
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.reserve_answer = True
        #: test hook, run (once per call) before ``get_evse`` is answered: lets a test publish
        #: something the module must receive before it knows its EVSEs (e.g. a fault)
        self.before_get_evse: Callable[[], None] | None = None
        self._lock = threading.Lock()
        answers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "get_evse": self._answer_get_evse,
            "reserve": lambda a: self.reserve_answer,
            "stop_transaction": lambda a: True,
        }
        for name in ("get_evse", "authorize_response", "withdraw_authorization", "reserve",
                     "cancel_reservation", "stop_transaction"):
            self.bus.provide_command("evse", name, self._recorder(name, answers.get(name)))

    def _answer_get_evse(self, _args: dict[str, Any]) -> dict[str, Any]:
        if self.before_get_evse is not None:
            self.before_get_evse()
        return {"id": self.evse_id,
                "connectors": [{"id": c, "type": t} for c, t in self.connectors]}

    def _recorder(self, name: str, answer: Callable[[dict[str, Any]], Any] | None
                  ) -> Callable[[dict[str, Any]], Any]:
        def handle(args: dict[str, Any]) -> Any:
            with self._lock:
                if name != "get_evse":
                    self.received.append((name, args))
            return answer(args) if answer else None
        return handle

    def start(self) -> None:
        self.bus.start()
        assert self.bus.wait_connected(DEADLINE_S)

    def stop(self) -> None:
        self.bus.stop()

    def event(self, event: str, connector_id: int = 1, **sub: Any) -> None:
        value = {"uuid": f"{self.evse_id}-{time.monotonic_ns()}", "event": event,
                 "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "connector_id": connector_id, **sub}
        self.bus.publish_var("evse", "session_event", value)

    def plug_in(self) -> None:
        self.event("SessionStarted", session_started={
            "reason": "EVConnected", "meter_value": {"energy_Wh_import": {"total": 0}}})

    def transaction_started(self, token: dict[str, Any]) -> None:
        self.event("TransactionStarted", transaction_started={
            "id_tag": token, "meter_value": {"energy_Wh_import": {"total": 0}}})

    def transaction_finished(self) -> None:
        self.event("TransactionFinished", transaction_finished={
            "meter_value": {"energy_Wh_import": {"total": 1000}}, "reason": "Local"})

    def session_finished(self) -> None:
        self.event("SessionFinished")

    def fault(self) -> None:
        self.bus.raise_error("evse", "evse_manager/Inoperative", "simulated fault")

    def clear_fault(self) -> None:
        self.bus.clear_error("evse", "evse_manager/Inoperative", "fault cleared")


class Rig:
    """One station: broker + EVSE manager sims + validators + provider + the module."""

    def __init__(self, broker: Mosquitto, tmp_path: Path, *,
                 evses: list[list[tuple[int, str]]] | None = None,
                 validators: list[ValidatorSpec] | None = None,
                 config: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None,
                 module_id: str = "auth", scripted: bool = False,
                 prefix: str = "everest/", mqtt: dict[str, Any] | None = None) -> None:
        self.scripted = scripted
        self.prefix = prefix
        self.mqtt = mqtt or {}  # more keys of the module's mqtt section (TLS, credentials...)
        self.broker = broker
        self.tmp_path = tmp_path
        self.module_id = module_id
        self.evse_specs = evses or [[(1, "cCCS2")], [(1, "sType2"), (2, "cCCS2")]]
        self.validator_specs = validators or [ValidatorSpec("validator")]
        self.config = {"selection_algorithm": "PlugEvents", "connection_timeout": 1,
                       **(config or {})}
        self.extra = extra or {}
        self.station_path = tmp_path / "station.yaml"
        self.evses: list[Any] = []  # EvseManagerSim, or ScriptedEvse when scripted
        self.validators: list[ValidatorSim] = []
        self.statuses = StatusLog()
        self.reservation_updates: list[dict[str, Any]] = []
        self.ready_count = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tmp_path / "auth-module.log"
        self._log_file: Any = None
        self.observer = self._bus("test_observer")
        self.provider = TokenProviderSim(self._bus, module_id="rfid_reader")

    # --- building ---------------------------------------------------------------------------

    def _bus(self, module_id: str) -> BusClient:
        return BusClient(module_id=module_id, host=self.broker.host, port=self.broker.port,
                         prefix=self.prefix)

    def write_station(self) -> Path:
        station = {
            "mqtt": {"host": self.broker.host, "port": self.broker.port, "prefix": self.prefix,
                     **self.mqtt},
            "module_id": self.module_id,
            "config": self.config,
            "connections": {
                "token_provider": [{"module_id": "rfid_reader", "implementation_id": "main"}],
                "token_validator": [{"module_id": v.module_id, "implementation_id": "main"}
                                    for v in self.validator_specs],
                "evse_manager": [{"module_id": f"evse_manager_{i}", "implementation_id": "evse"}
                                 for i in range(1, len(self.evse_specs) + 1)],
            },
            "reservations": {"store": str(self.tmp_path / "reservations.json")},
            "logging": {"level": "debug", "format": "json", "show_tokens": True},
            **self.extra,
        }
        self.station_path.write_text(yaml.safe_dump(station, sort_keys=False))
        return self.station_path

    def start_simulators(self) -> None:
        for evse_id, connectors in enumerate(self.evse_specs, start=1):
            sim_class = ScriptedEvse if self.scripted else EvseManagerSim
            sim = sim_class(self._bus, f"evse_manager_{evse_id}", evse_id=evse_id,
                            connectors=connectors)
            sim.start()
            self.evses.append(sim)
        for spec in self.validator_specs:
            sim = ValidatorSim(self._bus, module_id=spec.module_id, tokens=spec.tokens,
                               unknown_status=spec.unknown_status)
            sim.start()
            self.validators.append(sim)
        self.provider.start()
        self.observer.subscribe_var(self.module_id, "main", "token_validation_status",
                                    self.statuses.add)
        self.observer.subscribe_var(self.module_id, "reservation", "reservation_update",
                                    self.reservation_updates.append)
        self.observer.subscribe_raw(f"{self.prefix}modules/{self.module_id}/ready", self._on_ready)
        self.observer.start()
        assert self.observer.wait_connected(DEADLINE_S)
        if hasattr(self.observer, "wait_subscribed"):
            self.observer.wait_subscribed(DEADLINE_S)

    def _on_ready(self, _topic: str, _payload: bytes) -> None:
        self.ready_count += 1

    def start_module(self, wait_ready: bool = True) -> subprocess.Popen[bytes]:
        """Start ``auth-module --config station.yaml`` as its own process."""
        if not self.station_path.exists():
            self.write_station()
        seen = self.ready_count
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen([AUTH_MODULE, "--config", str(self.station_path)],
                                     stdout=self._log_file, stderr=subprocess.STDOUT)
        if wait_ready:
            wait_until(lambda: self.ready_count > seen or self.proc.poll() is not None,
                       10.0, "the module's ready message")
            assert self.proc.poll() is None, f"module exited: {self.module_log()[-2000:]}"
        return self.proc

    def start(self) -> Rig:
        self.write_station()
        self.start_simulators()
        self.start_module()
        return self

    def stop_module(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        if self._log_file:
            self._log_file.close()
        return code

    def stop(self) -> None:
        self.stop_module()
        for sim in [*self.evses, *self.validators, self.provider]:
            try:
                sim.stop()
            except Exception:
                pass
        self.observer.stop()

    def module_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        """The module log's JSON lines, parsed (other lines skipped)."""
        out = []
        for line in self.module_log().splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out

    # --- acting -----------------------------------------------------------------------------

    def evse(self, evse_id: int) -> Any:
        return self.evses[evse_id - 1]

    def swipe(self, token: str, **kwargs: Any) -> dict[str, Any]:
        return self.provider.swipe(token, **kwargs)

    def call(self, impl: str, cmd: str, args: dict[str, Any], timeout: float = DEADLINE_S) -> Any:
        return self.observer.call(self.module_id, impl, cmd, args, timeout=timeout)

    def commands(self, evse_id: int, name: str) -> list[dict[str, Any]]:
        """The arguments of every ``name`` command the EVSE manager received, in order."""
        return [args for cmd, args in list(self.evse(evse_id).received) if cmd == name]

    def authorized(self, evse_id: int) -> bool:
        """Authorization as EVerest's FakeAuthReceiver tracks it: the last word wins."""
        state = False
        for cmd, args in list(self.evse(evse_id).received):
            if cmd == "authorize_response":
                state = args["validation_result"]["authorization_status"] == "Accepted"
            elif cmd in ("withdraw_authorization", "stop_transaction"):
                state = False
        return state


# --- raw MQTT access (additive helpers) ---------------------------------------------------------


class RawClient:
    """A plain paho client: records every message on its filters and publishes any bytes.

    For tests that must see the exact envelopes on the wire or send malformed ones. It
    reconnects quickly (``reconnect_max_s``) and renews its subscriptions on each connect.
    With ``clean_session=False`` (and a fixed ``client_id``) a broker that keeps sessions
    queues QoS 1 messages for it while it is away.
    """

    def __init__(self, host: str, port: int, filters: tuple[str, ...] = ("everest/#",),
                 reconnect_max_s: float = 0.2, client_id: str | None = None,
                 clean_session: bool = True) -> None:
        import json
        import uuid

        import paho.mqtt.client as mqtt

        self._json = json
        self._mqtt_mod = mqtt
        self.filters = filters
        self.messages: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"raw-{uuid.uuid4().hex[:12]}",
                                   clean_session=clean_session, protocol=mqtt.MQTTv311)
        self._client.reconnect_delay_set(0.02, reconnect_max_s)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_disconnect = lambda *a: self._subscribed.clear()
        self._client.on_message = self._on_message
        self.host, self.port = host, port

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe([(f, 1) for f in self.filters])

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((time.monotonic(), msg.topic, bytes(msg.payload)))

    def start(self, timeout: float = DEADLINE_S) -> RawClient:
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        self.wait_subscribed(timeout)
        return self

    def wait_subscribed(self, timeout: float = DEADLINE_S) -> None:
        assert self._subscribed.wait(timeout), "raw client not subscribed"

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def stop(self) -> None:
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

    def publish(self, topic: str, payload: bytes | str | dict[str, Any], qos: int = 1) -> None:
        if isinstance(payload, dict):
            payload = self._json.dumps(payload)
        info = self._client.publish(topic, payload, qos=qos)
        info.wait_for_publish(DEADLINE_S)

    def snapshot(self) -> list[tuple[float, str, bytes]]:
        with self._lock:
            return list(self.messages)

    def on(self, topic: str) -> list[bytes]:
        """The payloads received on exactly ``topic``, in order."""
        return [p for _t, tp, p in self.snapshot() if tp == topic]

    def response(self, topic: str, call_id: str, timeout: float = DEADLINE_S) -> dict[str, Any]:
        """Wait for the CmdResult with ``data.data.id == call_id`` on ``topic``; return it."""
        def find() -> dict[str, Any] | None:
            for payload in self.on(topic):
                try:
                    env = self._json.loads(payload)
                    if env["data"]["data"]["id"] == call_id:
                        return env
                except (ValueError, KeyError, TypeError):
                    continue
            return None
        return wait_until(find, timeout, f"answer {call_id} on {topic}")

    def call(self, module_id: str, impl: str, cmd: str, args: Any, *, call_id: str,
             origin: str = "tester", prefix: str = "everest/",
             timeout: float = DEADLINE_S) -> dict[str, Any]:
        """Publish a Cmd envelope and return the whole answer envelope."""
        topic = f"{prefix}modules/{module_id}/impl/{impl}/cmd/{cmd}"
        self.publish(topic, {"msg_type": "Cmd",
                             "data": {"id": call_id, "args": args, "origin": origin}})
        return self.response(f"{topic}/response/{origin}", call_id, timeout)


class EvseTaps:
    """What the module sends the EVSE managers, in the module's own order, and proof that
    a published event went through the broker (so it precedes whatever is sent next).

    The scripted EVSE managers record commands from a worker pool, which may reorder two
    quick ones; the observer's raw subscriptions see them in the order the module sent them.
    """

    def __init__(self, rig: Rig, prefix: str = "everest/") -> None:
        self.rig = rig
        self._prefix = prefix
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        self.sent: list[tuple[int, str, dict[str, Any]]] = []  # (evse id, cmd, args)
        obs = rig.observer
        obs.subscribe_raw(f"{prefix}modules/+/impl/evse/var/session_event", self._on_seen)
        obs.subscribe_raw(f"{prefix}modules/+/impl/evse/error/#", self._on_seen)
        obs.subscribe_raw(f"{prefix}modules/+/impl/evse/cmd/+", self._on_cmd)

    def _on_seen(self, topic: str, _payload: bytes) -> None:
        with self._lock:
            self._seen[topic] = self._seen.get(topic, 0) + 1

    def _on_cmd(self, topic: str, payload: bytes) -> None:
        module_id, cmd = topic.split("/")[2], topic.rsplit("/", 1)[1]
        if not module_id.startswith("evse_manager_") or cmd == "get_evse":
            return
        args = json.loads(payload)["data"].get("args", {})
        with self._lock:
            self.sent.append((int(module_id.rsplit("_", 1)[1]), cmd, args))

    def _through_broker(self, topic: str, publish: Callable[[], None]) -> None:
        """Publish, and return once the broker has passed it on."""
        with self._lock:
            before = self._seen.get(topic, 0)
        publish()
        wait_until(lambda: self._seen.get(topic, 0) > before,
                   message=f"{topic} through the broker")
