"""Token latency: ``provided_token`` published -> ``authorize_response`` received.

::

    python -m bench.token_latency [--tokens 2000] [--warmup 100] [--json] [--status-listener]
                                  [--console]

One run, one mosquitto on loopback (``simulators.broker.Mosquitto``, TCP_NODELAY), and:

* the module as its own process (``auth-module --config station.yaml``): FindFirst, one EVSE,
  one bus token provider, one bus validator, ``logging: {level: warning}``;
* an MQTT echo: two raw paho 2.x clients with ``loop_start()`` (A publishes on ``ping``, B
  republishes the payload on ``pong`` from its ``on_message``, A times publish -> its own
  ``on_message``). Every client in the bench publishes and subscribes with the module's QoS
  (publish 1, subscribe ``BusClient``'s ``SUBSCRIBE_QOS``) and sets TCP_NODELAY;
* the other modules, each made like one of the echo's clients, so that the two intervals
  are measured alike: the token provider *is* client A (the token is published exactly as
  a ping is); the EVSE-manager stand-in is a raw paho client that takes its timestamp first
  thing in ``on_message``, as A does for a pong, and answers every command there; the
  instant validator is a raw paho client in a child process that answers in
  ``on_message``, as B does. Both ends of the interval are read in this process
  (``time.perf_counter_ns``); the validator's timestamps come over a pipe at the end;
* an observer of ``token_validation_status`` (a child process) checks that the warm-up
  tokens' statuses are exactly Processing, Accepted, UsedToStart and then leaves, so the
  measured tokens' statuses fan out to nobody, as the echo's messages do. With
  ``--status-listener`` it stays (a station with an OCPP module listening).

With ``--console`` the station also has a ``console:`` section (HTTPS on loopback) and a
browser-like subscriber (``bench.console_subscriber``) follows ``/api/v1/events`` during the
whole run. The module's RSS at the end of the run is reported either way.

Per token (sequential, one in flight): a fresh token value is published; the interval ends
in the EVSE stand-in's ``on_message`` for ``authorize_response``. Outside the timed interval
the bench then ends the session (SessionStarted, TransactionStarted, TransactionFinished,
SessionFinished, all from the EVSE stand-in's connection) and makes a handshake call
(``exists_reservation``) from that same connection: the module handles session events in
order before it dispatches the later command, so the answer proves the EVSE is free again.
Then one echo round trip, while the module is idle, so both series see the same machine.

Targets: p50(token) / p50(echo) <= 3.0 and token p99 < 10 ms. Exit status 0 when both
pass, 1 when one fails, 2 when the bench itself could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from auth_module.bus import BusClient
from auth_module.bus.client import SUBSCRIBE_QOS
from auth_module.bus.envelopes import (
    cmd_envelope,
    cmd_response_topic,
    cmd_result_envelope,
    cmd_topic,
    encode,
    new_call_id,
    parse_cmd,
    parse_cmd_result,
    var_envelope,
    var_topic,
)
from bench import AUTH_MODULE, quiet_logging, source_fingerprint, stop_module, summary_ms, run_and_report
from simulators.broker import Mosquitto
from simulators.token_provider import make_token

PREFIX = "everest/"
MODULE_ID = "auth"
PROVIDER_ID = "rfid_reader"
VALIDATOR_ID = "validator"
EVSE_ID = "evse_manager_1"
# Every client here publishes and subscribes as the module does (auth_module/bus/client.py:
# BusClient publishes at QoS 1, its default, and subscribes at SUBSCRIBE_QOS).
QOS = 1
STEP_TIMEOUT_S = 5.0

TARGET_RATIO = 3.0
TARGET_P99_MS = 10.0


# --------------------------------------------------------------------------- bus actors


def _validator_main(host: str, port: int, out: Any, stop: Any) -> None:
    """Child process: an instant validator, a raw paho client answering ``validate_token``
    with Accepted inside ``on_message`` (paho's network thread), so the answer leaves in
    the same loop iteration. Timestamps (CLOCK_MONOTONIC, shared by every process on the
    machine) go back to the parent at the end for the breakdown."""
    request = cmd_topic(PREFIX, VALIDATOR_ID, "main", "validate_token")
    times: dict[str, tuple[int, int]] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"bench-validator-{uuid.uuid4().hex[:8]}",
                         clean_session=True, protocol=mqtt.MQTTv311)
    subscribed = threading.Event()

    def on_socket_open(c: Any, userdata: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe(request, qos=SUBSCRIBE_QOS)

    def on_message(c: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        t_in = time.perf_counter_ns()
        cmd = parse_cmd(msg.payload)
        c.publish(f"{request}/response/{cmd.origin}",
                  encode(cmd_result_envelope(cmd.id, {"authorization_status": "Accepted"},
                                             VALIDATOR_ID)), qos=QOS)
        times[cmd.args["provided_token"]["id_token"]["value"]] = (t_in, time.perf_counter_ns())

    client.on_socket_open = on_socket_open
    client.on_connect = on_connect
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    client.connect(host, port, keepalive=30)
    client.loop_start()
    out.send("up" if subscribed.wait(STEP_TIMEOUT_S) else "failed")
    try:
        stop.recv()
    except EOFError:
        pass
    client.disconnect()
    client.loop_stop()
    out.send(times)


class Validator:
    """The instant validator, in a child process of its own (see ``_validator_main``).

    In this process it would share the GIL with the token provider and the EVSE stand-in,
    and a BusClient would answer from its worker pool: both add wake-ups that are the
    bench's, not the module's.
    """

    def __init__(self, host: str, port: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._recv, child_out = ctx.Pipe(duplex=False)
        child_stop, self._stop = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_validator_main, args=(host, port, child_out, child_stop),
                                 name="bench-validator", daemon=True)
        self.times: dict[str, tuple[int, int]] = {}

    def start(self) -> None:
        self._proc.start()
        if not self._recv.poll(15.0) or self._recv.recv() != "up":
            raise RuntimeError("the validator process could not subscribe")

    def stop(self) -> dict[str, tuple[int, int]]:
        """Stop the child and collect its (arrival, answer) timestamps per token."""
        try:
            self._stop.send("stop")
            if self._recv.poll(10.0):
                self.times = self._recv.recv()
        except (OSError, EOFError):
            pass
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()
        return self.times


class EvseStandIn:
    """A minimal EVSE manager (evse id 1, one connector) that timestamps authorize_response.

    A raw paho client with ``loop_start()``, made like the echo's clients: it answers every
    command in ``on_message`` (paho's network thread), and its ``authorize_response``
    timestamp is the first thing ``on_message`` does, as the echo's client A does for its
    pong. (A BusClient would first hand the command to its worker pool.)
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._cond = threading.Condition()
        self.arrivals: dict[str, tuple[int, str]] = {}
        self._answers: dict[str, Any] = {}
        self._subscribed = threading.Event()
        self._commands = cmd_topic(PREFIX, EVSE_ID, "evse", "NAME").replace("/NAME", "/+")
        self._authorize = cmd_topic(PREFIX, EVSE_ID, "evse", "authorize_response")
        self._handshake_topic = cmd_topic(PREFIX, MODULE_ID, "reservation", "exists_reservation")
        self._handshake_answers = cmd_response_topic(PREFIX, MODULE_ID, "reservation",
                                                     "exists_reservation", EVSE_ID)
        self._retvals: dict[str, Any] = {
            "get_evse": {"id": 1, "connectors": [{"id": 1, "type": "cCCS2"}]},
            "reserve": True,
            "stop_transaction": True,
        }
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-{EVSE_ID}-{uuid.uuid4().hex[:8]}",
                                  clean_session=True, protocol=mqtt.MQTTv311)
        self.client.on_socket_open = lambda c, u, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(
            [(self._commands, SUBSCRIBE_QOS), (self._handshake_answers, SUBSCRIBE_QOS)])
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def start(self) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(STEP_TIMEOUT_S):
            raise RuntimeError("the EVSE stand-in could not subscribe")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        t = time.perf_counter_ns()
        if msg.topic == self._handshake_answers:
            res = parse_cmd_result(msg.payload)
            with self._cond:
                self._answers[res.id] = res.retval
                self._cond.notify_all()
            return
        cmd = parse_cmd(msg.payload)
        name = msg.topic.rsplit("/", 1)[1]
        client.publish(cmd_response_topic(PREFIX, EVSE_ID, "evse", name, cmd.origin),
                       encode(cmd_result_envelope(cmd.id, self._retvals.get(name), EVSE_ID)),
                       qos=QOS)
        if msg.topic == self._authorize:
            value = cmd.args["provided_token"]["id_token"]["value"]
            status = cmd.args["validation_result"]["authorization_status"]
            with self._cond:
                self.arrivals[value] = (t, status)
                self._cond.notify_all()

    def wait_authorize(self, value: str, timeout: float = STEP_TIMEOUT_S) -> tuple[int, str]:
        with self._cond:
            if not self._cond.wait_for(lambda: value in self.arrivals, timeout):
                raise TimeoutError(f"no authorize_response for {value} within {timeout:g} s")
            return self.arrivals.pop(value)

    def _event(self, event: str, **sub: Any) -> None:
        value = {"uuid": uuid.uuid4().hex, "event": event,
                 "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "connector_id": 1, **sub}
        self.client.publish(var_topic(PREFIX, EVSE_ID, "evse", "session_event"),
                            encode(var_envelope(value)), qos=QOS)

    def run_session_to_end(self, token: dict[str, Any]) -> None:
        """Car plugs in, charges, leaves: the EVSE is free again afterwards."""
        meter0 = {"energy_Wh_import": {"total": 0}}
        self._event("SessionStarted", session_started={"reason": "EVConnected",
                                                       "meter_value": meter0})
        self._event("TransactionStarted", transaction_started={"id_tag": token,
                                                               "meter_value": meter0})
        self._event("TransactionFinished", transaction_finished={
            "meter_value": {"energy_Wh_import": {"total": 1000}}, "reason": "EVDisconnected"})
        self._event("SessionFinished")

    def handshake(self, value: str, timeout: float = STEP_TIMEOUT_S) -> Any:
        """A command behind the session events on the same connection: answered => handled."""
        call_id = new_call_id()
        self.client.publish(self._handshake_topic, encode(cmd_envelope(
            call_id, {"request": {"id_token": value, "evse_id": 1}}, EVSE_ID)), qos=QOS)
        with self._cond:
            if not self._cond.wait_for(lambda: call_id in self._answers, timeout):
                raise TimeoutError(f"no answer to the handshake within {timeout:g} s")
            return self._answers.pop(call_id)


def _observer_main(host: str, port: int, out: Any, stop: Any) -> None:
    """Child process: forward every token_validation_status and ready message to ``out``."""
    quiet_logging()
    bus = BusClient(module_id="bench_observer", host=host, port=port, prefix=PREFIX)
    lock = threading.Lock()

    def send(item: tuple[str, str]) -> None:
        with lock:
            out.send(item)

    bus.subscribe_var(MODULE_ID, "main", "token_validation_status",
                      lambda v: send((v["token"]["id_token"]["value"], v["status"])))
    bus.subscribe_raw(f"{PREFIX}modules/{MODULE_ID}/ready", lambda t, p: send(("", "ready")))
    bus.start()
    ok = bus.wait_connected(STEP_TIMEOUT_S) and bus.wait_subscribed(STEP_TIMEOUT_S)
    send(("", "observer-up" if ok else "observer-failed"))
    stop.recv()  # until the parent says stop (or goes away: EOFError)
    bus.stop()


class Observer:
    """Records every token_validation_status and the module's ready messages.

    It runs in a child process, so its MQTT traffic (three statuses per token, one of them
    arriving while the timed interval runs) does not compete for this process's GIL with the
    validator and EVSE stand-ins. The pipe is read only by the bench's main thread, outside
    the timed interval.
    """

    def __init__(self, host: str, port: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._recv, child_out = ctx.Pipe(duplex=False)
        child_stop, self._stop = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_observer_main, args=(host, port, child_out, child_stop),
                                 name="bench-observer", daemon=True)
        self.statuses: dict[str, list[str]] = {}
        self.ready = 0

    def start(self) -> None:
        self._proc.start()
        self._pump_until(lambda m: m[1] in ("observer-up", "observer-failed"), 15.0,
                         "the observer process")
        if "observer-failed" in self.statuses.get("", ()):
            raise RuntimeError("observer could not connect to the broker")

    def _pump_until(self, done: Any, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or not self._recv.poll(left):
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            msg = self._recv.recv()
            token, status = msg
            if token == "" and status == "ready":
                self.ready += 1
            self.statuses.setdefault(token, []).append(status)
            if done(msg):
                return

    def wait_ready(self, timeout: float) -> None:
        if self.ready == 0:
            self._pump_until(lambda m: m == ("", "ready"), timeout, "the module's ready message")

    def wait_status(self, value: str, status: str, timeout: float = STEP_TIMEOUT_S) -> list[str]:
        if status not in self.statuses.get(value, ()):
            self._pump_until(lambda m: m == (value, status), timeout, f"{status} for {value}")
        return self.statuses.pop(value)

    def stop(self) -> None:
        try:
            self._stop.send("stop")
        except OSError:
            pass
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()


class Echo:
    """Two raw paho clients: A publishes on ``ping``; B republishes it on ``pong``."""

    def __init__(self, host: str, port: int, qos: int = QOS) -> None:
        self.host, self.port, self.qos = host, port, qos
        tag = uuid.uuid4().hex[:8]
        self.ping, self.pong = f"bench/echo/{tag}/ping", f"bench/echo/{tag}/pong"
        self._received = threading.Event()
        self._t_recv = 0
        self._subscribed = threading.Semaphore(0)
        self.a = self._client("a", self.pong, self._on_pong)
        self.b = self._client("b", self.ping, self._on_ping)

    def _client(self, name: str, sub_topic: str, on_message: Any) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                        client_id=f"bench-echo-{name}-{uuid.uuid4().hex[:8]}",
                        clean_session=True, protocol=mqtt.MQTTv311)

        def on_socket_open(client: Any, userdata: Any, sock: Any) -> None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            client.subscribe(sub_topic, qos=SUBSCRIBE_QOS)

        def on_subscribe(client: Any, userdata: Any, mid: Any, codes: Any, props: Any) -> None:
            self._subscribed.release()

        c.on_socket_open = on_socket_open
        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        c.on_message = on_message
        return c

    def _on_ping(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        client.publish(self.pong, msg.payload, qos=self.qos)

    def _on_pong(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._t_recv = time.perf_counter_ns()
        self._received.set()

    def start(self, timeout: float = STEP_TIMEOUT_S) -> None:
        for c in (self.a, self.b):
            c.connect(self.host, self.port, keepalive=30)
            c.loop_start()
        for _ in range(2):
            if not self._subscribed.acquire(timeout=timeout):
                raise TimeoutError("echo clients did not subscribe")

    def publish_token(self, topic: str, body: bytes) -> int:
        """The token provider's publish, made exactly as the echo's is (client A, same
        QoS, same paho loop), so the two intervals start alike; returns the start time."""
        t0 = time.perf_counter_ns()
        self.a.publish(topic, body, qos=self.qos)
        return t0

    def round_trip(self, payload: bytes, timeout: float = STEP_TIMEOUT_S) -> int:
        """Nanoseconds from A's publish to A's on_message for the echo."""
        self._received.clear()
        t0 = time.perf_counter_ns()
        self.a.publish(self.ping, payload, qos=self.qos)
        if not self._received.wait(timeout):
            raise TimeoutError(f"no echo within {timeout:g} s")
        return self._t_recv - t0

    def stop(self) -> None:
        for c in (self.a, self.b):
            try:
                c.disconnect()
                c.loop_stop()
            except Exception:
                pass


# --------------------------------------------------------------------------- the run


def write_station(path: Path, host: str, port: int, store: Path,
                  log_level: str = "warning", persistent_session: bool = False,
                  console_port: int | None = None) -> None:
    mqtt_keys: dict[str, Any] = {"host": host, "port": port, "prefix": PREFIX}
    if persistent_session:
        mqtt_keys["persistent_session"] = True
    station = {
        "mqtt": mqtt_keys,
        "module_id": MODULE_ID,
        "config": {"selection_algorithm": "FindFirst", "connection_timeout": 30},
        "connections": {
            "token_provider": [{"module_id": PROVIDER_ID, "implementation_id": "main"}],
            "token_validator": [{"module_id": VALIDATOR_ID, "implementation_id": "main"}],
            "evse_manager": [{"module_id": EVSE_ID, "implementation_id": "evse"}],
        },
        "reservations": {"store": str(store)},
        "logging": {"level": log_level},
    }
    if console_port is not None:
        from bench.console_subscriber import console_section

        station["console"] = console_section(console_port)
    path.write_text(yaml.safe_dump(station, sort_keys=False))


def _cpu_s(pid: int) -> float | None:
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except Exception:
        return None


def _rss_mb(pid: int) -> float | None:
    try:
        import psutil

        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except Exception:
        return None


def _cpu_snapshot() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this bench + its children:
    the module and mosquitto). Their difference over the run is what other programs used."""
    try:
        import psutil

        t = psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        ours = 0.0
        me = psutil.Process()
        for p in (me, *me.children(recursive=True)):
            try:
                c = p.cpu_times()
                ours += c.user + c.system
            except psutil.Error:
                pass
        return busy, ours
    except Exception:
        return None


def run(tokens: int, warmup: int, progress: bool,
        module_command: list[str] | None = None,
        samples_path: Path | None = None, log_level: str = "warning",
        status_listener: bool = False, persistent_session: bool = False,
        console: bool = False) -> dict[str, Any]:
    command = module_command or [AUTH_MODULE]
    load_before = os.getloadavg()
    fingerprint = source_fingerprint()
    tmp = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    station_path = tmp / "station.yaml"
    log_path = tmp / "auth-module.log"
    proc: subprocess.Popen[bytes] | None = None
    evse: EvseStandIn | None = None
    echo: Echo | None = None
    observer: Observer | None = None
    subscriber: Any = None
    console_result: dict[str, Any] = {}
    rss_mb: float | None = None
    with Mosquitto() as broker:
        host, port = broker.host, broker.port
        try:
            console_port = None
            if console:
                from bench.console_subscriber import free_port

                console_port = free_port()
            write_station(station_path, host, port, tmp / "reservations.json", log_level,
                          persistent_session, console_port)
            validator = Validator(host, port)
            validator.start()
            evse = EvseStandIn(host, port)
            evse.start()
            observer = Observer(host, port)
            observer.start()
            echo = Echo(host, port)
            echo.start()

            with open(log_path, "ab") as log_file:
                # cwd: the temp dir, so nothing the module writes lands in the project
                proc = subprocess.Popen([*command, "--config", str(station_path)], cwd=tmp,
                                        stdout=log_file, stderr=subprocess.STDOUT)
            try:
                observer.wait_ready(15.0)
            except TimeoutError:
                if proc.poll() is None:
                    raise
            if proc.poll() is not None:
                raise RuntimeError(f"module exited with {proc.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
            if console_port is not None:
                from bench.console_subscriber import SseSubscriber, viewer_key

                subscriber = SseSubscriber(console_port, viewer_key(station_path),
                                           tmp / "station.console.pem").start()

            run_tag = uuid.uuid4().hex[:6].upper()
            token_topic = var_topic(PREFIX, PROVIDER_ID, "main", "provided_token")
            token_ns: list[int] = []
            echo_ns: list[int] = []
            # the breakdown: provider -> validator request; validator; its answer -> EVSE
            inbound_ns: list[int] = []
            validator_ns: list[int] = []
            outbound_ns: list[int] = []
            raw: list[dict[str, Any]] = []
            odd: list[tuple[str, list[str]]] = []
            cpu_before: float | None = None
            snap_before: tuple[float, float] | None = None
            t_start = 0.0
            total = warmup + tokens
            checked = 0
            for i in range(total):
                if i == warmup:
                    if not status_listener and observer is not None:
                        observer.stop()  # the measured tokens' statuses go to nobody
                        observer = None
                    cpu_before, t_start = _cpu_s(proc.pid), time.monotonic()
                    snap_before = _cpu_snapshot()
                value = f"BENCH-{run_tag}-{i:07d}"
                msg = make_token(value)  # built (and validated) outside the timed interval
                body = encode(var_envelope(msg))
                t0 = echo.publish_token(token_topic, body)
                t1, status = evse.wait_authorize(value)
                if status != "Accepted":
                    raise RuntimeError(f"{value}: authorize_response {status}, expected Accepted")
                if i < warmup or status_listener:
                    assert observer is not None
                    seen = observer.wait_status(value, "UsedToStart")
                    checked += 1
                    if seen != ["Processing", "Accepted", "UsedToStart"]:
                        odd.append((value, seen))
                evse.run_session_to_end(msg)
                evse.handshake(value)
                rtt = echo.round_trip(body)
                if i >= warmup:
                    token_ns.append(t1 - t0)
                    echo_ns.append(rtt)
                    raw.append({"token": value, "t_publish": t0, "t_evse": t1})
                if progress and (i + 1) % 500 == 0:
                    print(f"  ... {i + 1}/{total}", file=sys.stderr, flush=True)
            elapsed = time.monotonic() - t_start
            cpu_after = _cpu_s(proc.pid)
            snap_after = _cpu_snapshot()
            if proc.poll() is not None:
                raise RuntimeError(f"module exited with {proc.returncode} during the run")
            rss_mb = _rss_mb(proc.pid)
            if subscriber is not None:
                console_result = subscriber.stop()
            times = validator.stop()
            for rec in raw:
                t_vin, t_vout = times[rec["token"]]
                rec.update(t_validator_in=t_vin, t_validator_out=t_vout)
                inbound_ns.append(t_vin - rec["t_publish"])
                validator_ns.append(t_vout - t_vin)
                outbound_ns.append(rec["t_evse"] - t_vout)
            if samples_path is not None:
                with open(samples_path, "w") as f:
                    for rec, e in zip(raw, echo_ns):
                        f.write(json.dumps({**rec, "echo_ns": e}) + "\n")
        except BaseException as exc:
            exc.add_note(f"module log and station file kept in {tmp}")
            raise
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            stop_module(proc)
            if echo is not None:
                echo.stop()
            if observer is not None:
                observer.stop()
            if evse is not None:
                evse.stop()

    token = summary_ms(token_ns)
    echo_s = summary_ms(echo_ns)
    ratio = token["p50"] / echo_s["p50"]
    targets = {
        "ratio_p50_token_over_echo": {"value": ratio, "limit": TARGET_RATIO,
                                      "pass": ratio <= TARGET_RATIO},
        "token_p99_ms": {"value": token["p99"], "limit": TARGET_P99_MS,
                         "pass": token["p99"] < TARGET_P99_MS},
    }
    module_cpu = (None if cpu_before is None or cpu_after is None
                  else (cpu_after - cpu_before) / tokens * 1e3)
    other_busy = None
    if snap_before is not None and snap_after is not None and elapsed > 0:
        other = (snap_after[0] - snap_before[0]) - (snap_after[1] - snap_before[1])
        other_busy = max(0.0, other) / (elapsed * (os.cpu_count() or 1)) * 100
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "module_command": command,
        "auth_module_fingerprint": fingerprint,
        "module_log_level": log_level,
        "tokens": tokens,
        "warmup": warmup,
        "qos": QOS,
        "subscribe_qos": SUBSCRIBE_QOS,
        "persistent_session": persistent_session,
        "token_ms": token,
        "echo_ms": echo_s,
        "ratio_p50": ratio,
        "breakdown_ms": {
            "provided_token -> validate_token at validator": summary_ms(inbound_ns),
            "validator (own process)": summary_ms(validator_ns),
            "validator answer -> authorize_response at EVSE": summary_ms(outbound_ns),
        },
        "targets": targets,
        "pass": all(t["pass"] for t in targets.values()),
        "status_listener": status_listener,
        "status_checked_tokens": checked,
        "unexpected_status_sequences": len(odd),
        "unexpected_examples": odd[:3],
        "validator_calls": len(validator.times),
        "module_cpu_ms_per_iteration": module_cpu,
        "other_programs_cpu_pct": other_busy,
        "measured_wall_s": elapsed,
        "console": {"on": console, **console_result},
        "module_rss_mb": rss_mb,
    }


def _fmt_row(name: str, s: dict[str, Any]) -> str:
    return (f"{name:<28} {s['n']:>6} {s['p50']:>8.3f} {s['p90']:>8.3f} {s['p99']:>8.3f} "
            f"{s['max']:>8.3f} {s['mean']:>8.3f}")


def report(r: dict[str, Any]) -> str:
    lines = [
        f"token latency bench: {r['tokens']} tokens after {r['warmup']} warm-up, QoS {r['qos']} "
        f"(subscriptions {r['subscribe_qos']}), "
        f"module persistent session {'on' if r.get('persistent_session') else 'off'}, "
        f"module log level {r['module_log_level']}, "
        f"{r['machine']['cpus']} CPUs, Python {r['machine']['python']}, load average "
        f"{r['machine']['loadavg_before'][0]:.2f} before / "
        f"{r['machine']['loadavg_after'][0]:.2f} after, auth_module {r['auth_module_fingerprint']}",
        f"{'(milliseconds)':<28} {'n':>6} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'mean':>8}",
        _fmt_row("provided_token -> authorize", r["token_ms"]),
        _fmt_row("bare MQTT echo round trip", r["echo_ms"]),
        f"ratio p50(token)/p50(echo): {r['ratio_p50']:.2f}",
        "the token interval in three parts (timestamps at the validator stand-in):",
    ]
    short = ["  token -> validator request", "  validator stand-in", "  answer -> authorize"]
    for label, (name, s) in zip(short, r["breakdown_ms"].items()):
        lines.append(_fmt_row(label, s) + f"   ({name})")
    if r["module_cpu_ms_per_iteration"] is not None:
        lines.append(f"module CPU per iteration (token + session end + handshake): "
                     f"{r['module_cpu_ms_per_iteration']:.2f} ms")
    if r["tokens"] < 1000:
        lines.append("note: fewer than 1000 measured tokens; p99 and the verdicts are indicative")
    if r["other_programs_cpu_pct"] is not None:
        lines.append(f"CPU used by other programs during the run: "
                     f"{r['other_programs_cpu_pct']:.0f}% of the machine")
    listener = ("a status listener stayed subscribed throughout" if r["status_listener"]
                else "no status listener during the measured tokens")
    lines.append(f"token statuses checked on {r['status_checked_tokens']} tokens "
                 f"(Processing, Accepted, UsedToStart); {listener}")
    if r["unexpected_status_sequences"]:
        lines.append(f"WARNING: {r['unexpected_status_sequences']} tokens with an unexpected "
                     f"status sequence, e.g. {r['unexpected_examples']}")
    c = r["console"]
    lines.append("console: " + (f"on, a subscriber read {c.get('sse_events')} state events "
                                f"({c.get('sse_bytes')} bytes)"
                                + (f"; stream error: {c['sse_error']}" if c.get("sse_error") else "")
                                if c["on"] else "off")
                 + (f"; module RSS at the end {r['module_rss_mb']} MiB"
                    if r["module_rss_mb"] is not None else ""))
    t = r["targets"]["ratio_p50_token_over_echo"]
    lines.append(f"{'PASS' if t['pass'] else 'FAIL'}  ratio p50(token)/p50(echo) "
                 f"{t['value']:.2f} <= {t['limit']:.1f}")
    t = r["targets"]["token_p99_ms"]
    lines.append(f"{'PASS' if t['pass'] else 'FAIL'}  token p99 {t['value']:.3f} ms "
                 f"< {t['limit']:.0f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.token_latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=2000, help="measured tokens (default 2000)")
    p.add_argument("--warmup", type=int, default=100, help="warm-up tokens (default 100)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"],
                   help="the module's logging.level (default warning, so that logging does "
                        "not dominate; the module's log goes to a temp file)")
    p.add_argument("--samples", default=None, metavar="FILE", type=Path,
                   help="also write every measured token's timestamps (perf_counter_ns: "
                        "CLOCK_MONOTONIC, comparable across processes) as JSON lines")
    p.add_argument("--status-listener", action="store_true",
                   help="keep a token_validation_status subscriber (as an OCPP module would "
                        "be) during the measured tokens too; by default it checks the "
                        "warm-up tokens' statuses and leaves before the measured ones")
    p.add_argument("--module-command", default=None, metavar="CMD",
                   help="how to start the module instead of the auth-module script (split "
                        "like a shell; '--config STATION' is appended), e.g. to compare a "
                        "candidate build")
    p.add_argument("--persistent-session", action="store_true",
                   help="run the module with mqtt.persistent_session: true (fixed client id, "
                        "clean session off, its subscriptions at QoS 1)")
    p.add_argument("--console", action="store_true",
                   help="run the station with its console on (HTTPS on loopback) and a "
                        "browser-like subscriber following /api/v1/events throughout")
    args = p.parse_args(argv)
    if args.tokens < 1 or args.warmup < 0:
        p.error("--tokens must be >= 1 and --warmup >= 0")
    quiet_logging()
    command = shlex.split(args.module_command) if args.module_command else None

    def measure() -> dict[str, Any]:
        return run(args.tokens, args.warmup, progress=not args.json, module_command=command,
                   samples_path=args.samples, log_level=args.log_level,
                   status_listener=args.status_listener,
                   persistent_session=args.persistent_session, console=args.console)

    return run_and_report("bench.token_latency", measure, args.json, report)


if __name__ == "__main__":
    sys.exit(main())
