"""``auth-demo``: a scripted, narrated charging session with the real auth module.

::

    auth-demo --config config/demo.yaml [--fast] [--tokens config/tokens.yaml]

What it does, in order:

1. **Broker.** If an MQTT broker answers at the station file's ``mqtt.host:port`` it is used.
   Otherwise the demo starts its own mosquitto on that port; if the port is held by something
   that is not an MQTT broker (or the host is not this machine), it starts mosquitto on a
   free loopback port and runs the station from a temporary copy of the station file that
   points at it.
2. **Station.** The simulated EVSE managers, validator and card reader run in this process
   (:func:`simulators.launcher.start_station`); the auth module runs as its own process,
   ``auth-module --config STATION``, with its log in ``.state/demo-module.log``. The demo
   waits for the module's ``ready`` message.
3. **Scenes.** Six short scenes, one numbered line per step, each followed by what really
   happened on the bus: the module's ``token_validation_status`` and ``reservation_update``
   vars, the session events of the EVSE managers and the commands the module sent them.
   When an expected outcome does not come within a deadline the demo prints an
   ``unexpected: ...`` line, tidies up and goes on; the exit status is then 1. For the last
   scene the demo restarts the module from a temporary copy of the station file with
   ``stop_transaction_on_reswipe: false``.
4. **Shutdown.** SIGTERM to the module (it must exit 0), then the simulators and the
   broker the demo started. Ctrl-C (or SIGTERM) at any point shuts down the same way and
   exits 130.

``--fast`` drops the pauses between steps (for tests); by default the demo pauses about a
second between steps so that a person can read along.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

__all__ = ["main"]

PROG = "auth-demo"
INDENT = "      "
FINAL = ("UsedToStart", "UsedToStop", "UsedToReauthorize", "Rejected", "TimedOut", "Withdrawn")
DEADLINE_S = 5.0          # how long any expected reaction may take
READY_DEADLINE_S = 20.0   # how long the module may take to publish ready
DEMO_TIMEOUT_S = 3        # the connection timeout used in the timeout scene
RESERVATION_ID = 4242     # the demo's reservation (cancelled at start if left over)
STATE_DIR = Path(".state")
PROJECT_DIR = Path(__file__).resolve().parent.parent

DEFAULT_NOTES = {
    "Processing": "the module has the card and asks the validator about it",
    "Accepted": "the validator knows the card",
    "UsedToStart": "the card was given to an EVSE",
    "UsedToStop": "the card stopped a transaction",
    "UsedToReauthorize": "the card belongs to a running transaction, which goes on",
    "Rejected": "the card may not charge here",
    "TimedOut": "nothing happened within the connection timeout",
    "Withdrawn": "the authorization was withdrawn",
}


class DemoError(Exception):
    """Something that stops the demo before the scenes (one line for the user)."""


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: shut down cleanly."""


# ---------------------------------------------------------------------------- output


def out(text: str = "") -> None:
    print(text, flush=True)


def err(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the broker


def mqtt_broker_answers(host: str, port: int, timeout: float = 1.0) -> bool | None:
    """True: an MQTT broker accepted a CONNECT there. None: nothing listens there.
    False: something listens but it is not an MQTT broker we can use."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    with sock:
        client_id = f"auth-demo-probe-{os.getpid()}".encode()
        variable = b"\x00\x04MQTT\x04\x02\x00\x0a"  # MQTT 3.1.1, clean session, keepalive 10
        payload = len(client_id).to_bytes(2, "big") + client_id
        remaining = len(variable) + len(payload)
        try:
            sock.settimeout(timeout)
            sock.sendall(bytes([0x10, remaining]) + variable + payload)
            answer = b""
            while len(answer) < 4:
                chunk = sock.recv(4 - len(answer))
                if not chunk:
                    break
                answer += chunk
            if len(answer) == 4 and answer[0] == 0x20 and answer[1] == 0x02 and answer[3] == 0:
                try:
                    sock.sendall(b"\xe0\x00")  # DISCONNECT
                except OSError:
                    pass
                return True
        except OSError:
            pass
    return False


def _is_local(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


@dataclass
class BrokerChoice:
    host: str
    port: int
    started: bool       # whether the demo started this broker
    station_path: Path  # the station file to use (maybe a temporary copy)
    line: str


def _start_mosquitto(host: str, port: int | None, owned: list[Any]) -> Any:
    """Start mosquitto and add it to ``owned`` (which the shutdown closes) before it runs.

    SIGINT is blocked while it starts, so the child inherits it blocked: a Ctrl-C in the
    terminal then reaches only the demo, which stops everything in order (module first).
    A Ctrl-C meanwhile is delivered to the demo when the mask is restored."""
    from simulators.broker import Mosquitto

    broker = Mosquitto(port=port, host=host)
    owned.append(broker)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        broker.start()
    except BaseException:
        owned.remove(broker)
        broker.close()
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return broker


def _station_copy(original: Path, host: str, port: int, owned: list[Any]) -> Path:
    """A temporary copy of the station file pointing at ``host:port``. Relative paths in it
    (reservation store, allow-list files) are made absolute so they still mean the same."""
    data = yaml.safe_load(original.read_text(encoding="utf-8")) or {}
    base = original.resolve().parent
    data.setdefault("mqtt", {})
    if data["mqtt"] is None:
        data["mqtt"] = {}
    data["mqtt"]["host"] = host
    data["mqtt"]["port"] = port
    module_id = data.get("module_id", "auth")
    reservations = data.get("reservations") or {}
    store = reservations.get("store") or f".state/{module_id}-reservations.json"
    if not Path(store).expanduser().is_absolute():
        reservations["store"] = str(base / store)
    data["reservations"] = reservations
    for key in ("token_validator", "token_provider"):
        for entry in (data.get("connections") or {}).get(key) or []:
            if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                if not Path(entry["file"]).expanduser().is_absolute():
                    entry["file"] = str(base / entry["file"])
    temp_dir = Path(tempfile.mkdtemp(prefix="auth-demo-"))
    owned.append(temp_dir)
    copy = temp_dir / original.name
    copy.write_text(f"# temporary copy of {original} made by auth-demo for port {port}\n"
                    + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return copy


def _config_copy(original: Path, overrides: dict[str, Any], owned: list[Any]) -> Path:
    """A temporary copy of the station file with ``overrides`` in its ``config`` section
    (host and port as they are; relative paths made absolute, as :func:`_station_copy`)."""
    data = yaml.safe_load(original.read_text(encoding="utf-8")) or {}
    mqtt = data.get("mqtt") or {}
    copy = _station_copy(original, str(mqtt.get("host", "127.0.0.1")),
                         int(mqtt.get("port", 1883)), owned)
    data = yaml.safe_load(copy.read_text(encoding="utf-8"))
    data["config"] = {**(data.get("config") or {}), **overrides}
    settings = ", ".join(f"{k}: {v}" for k, v in overrides.items())
    copy.write_text(f"# temporary copy of {original} made by auth-demo with {settings}\n"
                    + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return copy


def choose_broker(station_path: Path, host: str, port: int, owned: list[Any]) -> BrokerChoice:
    """Find or start the broker; what the demo starts (brokers, temp dirs) goes to ``owned``."""
    answer = mqtt_broker_answers(host, port)
    where = f"{host}:{port}"
    if answer is True:
        return BrokerChoice(host, port, False, station_path,
                            f"Broker: using the MQTT broker already running at {where}.")
    if answer is None and _is_local(host):
        try:
            broker = _start_mosquitto(host, port, owned)
        except RuntimeError:
            broker = None  # e.g. the port was taken meanwhile: use a free port below
        if broker is not None:
            return BrokerChoice(host, port, True, station_path,
                                f"Broker: no MQTT broker at {where}, so the demo started "
                                f"mosquitto there (it stops it at the end).")
    why = ("is taken by something that is not an MQTT broker" if answer is False
           else "has no MQTT broker and is not on this machine" if not _is_local(host)
           else "could not be used")
    broker = _start_mosquitto("127.0.0.1", None, owned)
    copy = _station_copy(station_path, broker.host, broker.port, owned)
    return BrokerChoice(broker.host, broker.port, True, copy,
                        f"Broker: {where} {why}; the demo started mosquitto on "
                        f"{broker.host}:{broker.port} and runs the station from a temporary "
                        f"copy of the station file: {copy}")


# ---------------------------------------------------------------------------- watching the bus


@dataclass
class Record:
    kind: str          # "status" | "reservation" | "event"
    evse: int | None   # for "event": the evse id
    value: dict[str, Any]


class Observer:
    """Everything the demo watches on the bus, in arrival order."""

    def __init__(self, bus: Any, module_id: str, evse_managers: list[tuple[str, str]]) -> None:
        self.bus = bus
        self.records: list[Record] = []
        self.ready_count = 0
        self._cond = threading.Condition()
        bus.subscribe_var(module_id, "main", "token_validation_status",
                          lambda v: self._add("status", None, v))
        bus.subscribe_var(module_id, "reservation", "reservation_update",
                          lambda v: self._add("reservation", None, v))
        for n, (mid, iid) in enumerate(evse_managers, start=1):
            bus.subscribe_var(mid, iid, "session_event",
                              lambda v, n=n: self._add("event", n, v))
        bus.subscribe_raw(f"{bus.prefix}modules/{module_id}/ready", self._on_ready)

    def _add(self, kind: str, evse: int | None, value: Any) -> None:
        if not isinstance(value, dict):
            return
        with self._cond:
            self.records.append(Record(kind, evse, value))
            self._cond.notify_all()

    def _on_ready(self, _topic: str, _payload: bytes) -> None:
        with self._cond:
            self.ready_count += 1
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.records)

    def wait(self, pred: Callable[[Record], bool], since: int, timeout: float,
             alive: Callable[[], bool] | None = None) -> tuple[int, Record] | tuple[None, None]:
        """The first record from index ``since`` on that satisfies ``pred``; (None, None)
        after ``timeout`` or as soon as ``alive()`` (the module still runs) is false."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(since, len(self.records)):
                    if pred(self.records[i]):
                        return i, self.records[i]
                left = deadline - time.monotonic()
                if left <= 0 or (alive is not None and not alive()):
                    return None, None
                self._cond.wait(min(left, 0.2))

    def wait_ready(self, seen: int, timeout: float, alive: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.ready_count <= seen:
                left = deadline - time.monotonic()
                if left <= 0 or not alive():
                    return False
                self._cond.wait(min(left, 0.2))
            return True

    def events(self, evse: int, since: int) -> list[dict[str, Any]]:
        with self._cond:
            return [r.value for r in self.records[since:] if r.kind == "event" and r.evse == evse]


def _token_value(msg: dict[str, Any]) -> str:
    return str(((msg.get("token") or {}).get("id_token") or {}).get("value", ""))


def _event_text(ev: dict[str, Any]) -> str:
    name = ev.get("event", "?")
    if name == "SessionStarted":
        reason = (ev.get("session_started") or {}).get("reason")
        return f"{name} ({reason})" if reason else name
    if name == "TransactionStarted":
        rid = (ev.get("transaction_started") or {}).get("reservation_id")
        return f"{name} (reservation {rid})" if rid is not None else name
    if name == "TransactionFinished":
        fin = ev.get("transaction_finished") or {}
        wh = ((fin.get("meter_value") or {}).get("energy_Wh_import") or {}).get("total")
        parts = [p for p in (f"reason {fin['reason']}" if fin.get("reason") else "",
                             f"{wh:.1f} Wh charged" if isinstance(wh, (int, float)) and wh >= 0.05
                             else "") if p]
        return f"{name} ({', '.join(parts)})" if parts else name
    return str(name)


# ---------------------------------------------------------------------------- the scenes


#: Restarts the module with these ``config`` keys changed; returns the new process or None.
Restarter = Callable[[dict[str, Any]], "subprocess.Popen[bytes] | None"]


class Demo:
    def __init__(self, station: Any, observer: Observer, proc: subprocess.Popen[bytes],
                 module_id: str, connection_timeout: int, pause_s: float, pace_s: float,
                 log_path: Path, restart_module: Restarter | None = None) -> None:
        self.restart_module = restart_module
        self.station = station
        self.obs = observer
        self.proc = proc
        self.module_id = module_id
        self.connection_timeout = connection_timeout
        self.pause_s = pause_s
        self.pace_s = pace_s
        self.log_path = log_path
        self.unexpected_count = 0
        self.scene_no = 0
        self.step_no = 0
        self.reservation_placed = False
        self._scene_trouble = False

    # --- printing ------------------------------------------------------------------------

    def pause(self) -> None:
        if self.pause_s > 0:
            time.sleep(self.pause_s)

    def scene(self, total: int, title: str) -> None:
        self.scene_no += 1
        self.step_no = 0
        out()
        out(f"=== Scene {self.scene_no}/{total}: {title} ===")

    def step(self, text: str) -> None:
        self.pause()
        self.step_no += 1
        out(f"[{self.scene_no}.{self.step_no}] {text}")

    def show(self, text: str) -> None:
        out(f"{INDENT}{text}")

    def unexpected(self, text: str) -> None:
        self.unexpected_count += 1
        self._scene_trouble = True
        out(f"{INDENT}unexpected: {text}")

    # --- acting ----------------------------------------------------------------------------

    def evse(self, n: int) -> Any:
        return self.station.evse(n)

    def module_alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, impl: str, cmd: str, args: dict[str, Any]) -> Any:
        return self.obs.bus.call(self.module_id, impl, cmd, args, timeout=DEADLINE_S)

    def swipe(self, token: str, connectors: list[int] | None = None) -> int:
        mark = self.obs.mark()
        self.station.provider.swipe(token, connectors=connectors)
        return mark

    def plug_in(self, n: int, note: str = "waiting for an authorization") -> bool:
        mark = self.obs.mark()
        if not self.evse(n).plug_in():
            self.unexpected(f"EVSE {n} already had a car plugged in")
            return False
        return self.expect_events(n, mark, "AuthRequired", note) is not None

    def plug_out(self, n: int, note: str) -> bool:
        mark = self.obs.mark()
        if not self.evse(n).plug_out():
            self.unexpected(f"EVSE {n} had no car plugged in")
            return False
        return self.expect_events(n, mark, "SessionFinished", note) is not None

    # --- expecting -------------------------------------------------------------------------

    def expect_events(self, n: int, since: int, last: str, note: str,
                      timeout: float = DEADLINE_S) -> dict[str, Any] | None:
        """Wait for session event ``last`` of EVSE ``n``; print the events up to it."""
        idx, rec = self.obs.wait(lambda r: r.kind == "event" and r.evse == n
                                 and r.value.get("event") == last, since, timeout)
        events = self.obs.events(n, since)
        if rec is None:
            seen = ", ".join(_event_text(e) for e in events) or "nothing"
            self.unexpected(f"EVSE {n} did not report {last} within {timeout:g} s "
                            f"(it reported: {seen})")
            return None
        upto = events[: next(i for i, e in enumerate(events) if e is rec.value) + 1]
        self.show(f"EVSE {n} -> {', '.join(_event_text(e) for e in upto)}: {note}")
        return rec.value

    def follow(self, token: str, since: int, want: str, notes: dict[str, str] | None = None,
               timeout: float = DEADLINE_S) -> dict[str, Any] | None:
        """Print each status the module publishes for ``token`` until a final one."""
        notes = {**DEFAULT_NOTES, **(notes or {})}
        start = time.monotonic()
        deadline = start + timeout
        idx = since
        while True:
            left = deadline - time.monotonic()
            i, rec = self.obs.wait(lambda r: r.kind == "status"
                                   and _token_value(r.value).casefold() == token.casefold(),
                                   idx, max(left, 0.0), alive=self.module_alive)
            if rec is None:
                if not self.module_alive():
                    self.unexpected(f"the auth module has exited ({_exit_text(self.proc)}); "
                                    f"no final status for {token}")
                else:
                    self.unexpected(f"the module published no final status for {token} "
                                    f"within {timeout:g} s (expected {want})")
                return None
            idx = i + 1
            status = str(rec.value.get("status"))
            where = ""
            connectors = (rec.value.get("token") or {}).get("connectors")
            if status in ("UsedToStart", "UsedToStop", "UsedToReauthorize") and connectors:
                where = " on EVSE " + ", ".join(str(c) for c in connectors)
            if status == "TimedOut":
                where = f" after {time.monotonic() - start:.1f} s"
            self.show(f"auth -> {status}{where}: {notes.get(status, '')}".rstrip(": "))
            if status in FINAL:
                if status != want:
                    self.unexpected(f"{token} ended with {status}, expected {want}")
                    return None
                return rec.value

    def expect_command(self, n: int, cmd: str, start: int,
                       describe: Callable[[dict[str, Any]], str]) -> dict[str, Any] | None:
        args = self.evse(n).wait_for_command(cmd, timeout=DEADLINE_S, start=start)
        if args is None:
            self.unexpected(f"EVSE {n} did not receive {cmd} within {DEADLINE_S:g} s")
            return None
        self.show(f"auth -> EVSE {n}: {cmd} {describe(args)}".rstrip())
        return args

    def expect_no_authorization(self, starts: dict[int, int]) -> None:
        got = [n for n, s in starts.items()
               if any(c == "authorize_response"
                      and a.get("validation_result", {}).get("authorization_status") == "Accepted"
                      for c, a in list(self.evse(n).received)[s:])]
        if got:
            self.unexpected("EVSE " + ", ".join(map(str, got)) + " was authorized anyway")
        else:
            names = " and ".join(f"EVSE {n}" for n in starts)
            self.show(f"{names} received no authorization: no charging.")

    def received_mark(self) -> dict[int, int]:
        return {n: len(self.evse(n).received) for n in (1, 2)}

    # --- building blocks ----------------------------------------------------------------------

    def start_charging(self, n: int, token: str, why: str) -> bool:
        """Plug in at EVSE n, swipe ``token``, expect UsedToStart and charging there."""
        self.step(f"A car is plugged in at EVSE {n}.")
        if not self.plug_in(n):
            return False
        self.step(f"Card {token} is swiped at the reader.")
        cmd_start = len(self.evse(n).received)
        ev_mark = self.swipe(token)
        msg = self.follow(token, ev_mark, "UsedToStart", {"UsedToStart": why})
        if msg is None:
            return False
        self.expect_command(n, "authorize_response", cmd_start, _auth_text)
        return self.expect_events(n, ev_mark, "ChargingStarted", "charging",
                                  timeout=DEADLINE_S + self.pace_s) is not None

    def tidy_up(self) -> None:
        """Bring the station back to idle after a scene that did not go as planned."""
        if not self._scene_trouble:
            return
        self._scene_trouble = False
        try:
            if not self.module_alive():
                raise RuntimeError("the module is gone: nothing to withdraw")
            self.call("main", "withdraw_authorization", {"request": {}})
            if self.reservation_placed:
                self.call("reservation", "cancel_reservation",
                          {"reservation_id": RESERVATION_ID})
                self.reservation_placed = False
                self.show(f"(tidying up: reservation {RESERVATION_ID} is cancelled)")
        except Exception:
            pass
        for n in (1, 2):
            if self.evse(n).session_state != "idle":
                self.evse(n).plug_out()
                self.show(f"(tidying up: the car at EVSE {n} is unplugged)")
        time.sleep(0.5)

    # --- the scenes -----------------------------------------------------------------------------

    def run(self) -> None:
        scenes = [
            ("a normal charge, started and stopped with the same card", self.scene_normal),
            ("an unknown card", self.scene_unknown),
            ("a card but no car: the connection timeout", self.scene_timeout),
            ("another card of the same group stops a charge (parent id)", self.scene_parent),
            ("a reservation", self.scene_reservation),
            ("a station with a display: a card swiped again does not stop its charge",
             self.scene_reswipe),
        ]
        from auth_module.bus import BusError

        for title, play in scenes:
            if not self.module_alive():
                self.unexpected_count += 1
                out(f"unexpected: the auth module has exited ({_exit_text(self.proc)}); "
                    f"the remaining scenes are skipped (see {self.log_path})")
                return
            self.scene(len(scenes), title)
            try:
                play()
            except BusError as exc:
                self.unexpected(f"a call to the module failed: {type(exc).__name__}: {exc}")
            self.tidy_up()

    def scene_normal(self) -> None:
        if not self.start_charging(1, "VALID_RFID_1",
                                   "the car at EVSE 1 was plugged in first (PlugEvents)"):
            return
        self.step("The same card VALID_RFID_1 is swiped again, to stop charging.")
        cmd_start = len(self.evse(1).received)
        mark = self.swipe("VALID_RFID_1")
        msg = self.follow("VALID_RFID_1", mark, "UsedToStop",
                          {"Processing": "the module sees the card that started this charge",
                           "UsedToStop": "the card that started a transaction stops it"})
        if msg is None:
            return
        self.expect_command(1, "stop_transaction", cmd_start, _stop_text)
        self.expect_events(1, mark, "TransactionFinished", "the transaction is over")
        self.step("The driver unplugs the car.")
        self.plug_out(1, "EVSE 1 is free again")

    def scene_unknown(self) -> None:
        self.step("A car is plugged in at EVSE 1.")
        if not self.plug_in(1):
            return
        self.step("Card UNKNOWN_CARD_42, which no validator knows, is swiped.")
        starts = self.received_mark()
        mark = self.swipe("UNKNOWN_CARD_42")
        msg = self.follow("UNKNOWN_CARD_42", mark, "Rejected",
                          {"Rejected": "the validator does not know the card"})
        if msg is None:
            return
        time.sleep(0.3)
        self.expect_no_authorization(starts)
        self.step("The driver gives up and unplugs.")
        self.plug_out(1, "EVSE 1 is free again")

    def scene_timeout(self) -> None:
        t = DEMO_TIMEOUT_S
        self.step(f"The demo lowers the connection timeout from {self.connection_timeout} s "
                  f"to {t} s (command set_connection_timeout), so you do not wait long.")
        retval = self.call("main", "set_connection_timeout", {"connection_timeout": t})
        self.show("auth answered set_connection_timeout -> null (done)" if retval is None
                  else f"auth answered set_connection_timeout -> {retval!r}")
        try:
            self.step("Card VALID_RFID_2 is swiped, but no car is plugged in anywhere.")
            starts = self.received_mark()
            mark = self.swipe("VALID_RFID_2")
            msg = self.follow(
                "VALID_RFID_2", mark, "TimedOut",
                {"Accepted": f"the card is valid, but with two EVSEs (PlugEvents) the module "
                             f"must learn where the car is: it waits up to {t} s for a plug-in",
                 "TimedOut": "no car was plugged in within the connection timeout"},
                timeout=t + DEADLINE_S)
            if msg is not None:
                self.expect_no_authorization(starts)
        finally:
            self.step(f"The connection timeout is set back to {self.connection_timeout} s.")
            self.call("main", "set_connection_timeout",
                      {"connection_timeout": self.connection_timeout})
            self.show("done")

    def scene_parent(self) -> None:
        if not self.start_charging(1, "VALID_RFID_1", "EVSE 1 has the car"):
            return
        if not self.start_charging(2, "VALID_RFID_2",
                                   "EVSE 2 has the new car (EVSE 1 is busy)"):
            return
        self.show("Both EVSEs are charging now: no EVSE is free.")
        self.step("Card VALID_RFID_3 is swiped. The validator puts it in the same group as "
                  "VALID_RFID_1 (parent id PARENT_RFID).")
        cmd_start = len(self.evse(1).received)
        mark = self.swipe("VALID_RFID_3")
        msg = self.follow(
            "VALID_RFID_3", mark, "UsedToStop",
            {"UsedToStop": "no EVSE is free, so a card of the same group stops the "
                           "group's transaction"})
        if msg is None:
            return
        self.expect_command(1, "stop_transaction", cmd_start, _stop_text)
        self.expect_events(1, mark, "TransactionFinished", "EVSE 1's transaction is over")
        self.step("Both drivers unplug (EVSE 2's transaction ends because its car leaves).")
        self.plug_out(1, "EVSE 1 is free")
        self.plug_out(2, "EVSE 2 is free")

    def scene_reservation(self) -> None:
        expiry = (datetime.now(UTC) + timedelta(minutes=10)).replace(microsecond=0)
        expiry_text = expiry.isoformat().replace("+00:00", "Z")
        rid = RESERVATION_ID
        self.step(f"EVSE 2 is reserved for card VALID_RFID_2 until {expiry_text} (command "
                  f"reserve_now, reservation {rid}).")
        cmd_start = len(self.evse(2).received)
        mark = self.obs.mark()
        result = self.call("reservation", "reserve_now", {"request": {
            "reservation_id": rid, "id_token": "VALID_RFID_2", "expiry_time": expiry_text,
            "evse_id": 2}})
        self.show(f"auth answered reserve_now -> {result}")
        if result != "Accepted":
            self.unexpected(f"reserve_now answered {result}, expected Accepted")
            return
        self.reservation_placed = True
        _, rec = self.obs.wait(lambda r: r.kind == "reservation"
                               and r.value.get("reservation_id") == rid, mark, DEADLINE_S)
        if rec is None:
            self.unexpected(f"no reservation_update for reservation {rid} within {DEADLINE_S:g} s")
        else:
            status = rec.value.get("reservation_status")
            self.show(f"auth -> reservation_update: reservation {rid} {status}")
            if status != "Placed":
                self.unexpected(f"reservation {rid} is {status}, expected Placed")
        self.expect_command(2, "reserve", cmd_start,
                            lambda a: f"(reservation {a.get('reservation_id')})")
        self.expect_events(2, mark, "ReservationStart", "EVSE 2 shows it is reserved")

        self.step("A stranger swipes card VALID_RFID_1 at EVSE 2's reader (connectors [2]).")
        starts = {2: len(self.evse(2).received)}
        mark = self.swipe("VALID_RFID_1", connectors=[2])
        msg = self.follow("VALID_RFID_1", mark, "Rejected",
                          {"Processing": "the module has the card; it may be used at EVSE 2 only",
                           "Rejected": "EVSE 2 is reserved for another card"})
        if msg is None:
            return
        time.sleep(0.3)
        self.expect_no_authorization(starts)

        self.step("The holder of the reservation plugs in at EVSE 2 ...")
        if not self.plug_in(2):
            return
        self.step("... and swipes card VALID_RFID_2.")
        cmd_start = len(self.evse(2).received)
        mark = self.swipe("VALID_RFID_2")
        msg = self.follow("VALID_RFID_2", mark, "UsedToStart",
                          {"UsedToStart": "the card that holds the reservation gets EVSE 2"})
        if msg is None:
            return
        self.reservation_placed = False
        args = self.expect_command(2, "authorize_response", cmd_start, _auth_text)
        if args is not None and args["validation_result"].get("reservation_id") != rid:
            self.unexpected(f"the authorization does not name reservation {rid}")
        ev = self.expect_events(2, mark, "ChargingStarted", "charging on the reservation",
                                timeout=DEADLINE_S + self.pace_s)
        if ev is not None:
            started = [e.get("transaction_started") or {} for e in self.obs.events(2, mark)
                       if e.get("event") == "TransactionStarted"]
            used = started[0].get("reservation_id") if started else None
            if used == rid:
                self.show(f"Reservation {rid} was used: accepted and used by VALID_RFID_2.")
            else:
                self.unexpected(f"the transaction does not name reservation {rid} ({used})")
        check = self.call("reservation", "exists_reservation",
                          {"request": {"id_token": "VALID_RFID_2", "evse_id": 2}})
        self.show(f"auth answered exists_reservation(VALID_RFID_2, EVSE 2) -> {check}: "
                  "a used reservation is gone")
        if check != "NotReserved":
            self.unexpected(f"exists_reservation answered {check}, expected NotReserved")
        self.step("The driver finishes and unplugs.")
        self.plug_out(2, "EVSE 2 is free again")


    def scene_reswipe(self) -> None:
        self.step("The demo restarts the auth module with stop_transaction_on_reswipe: false "
                  "(from a temporary copy of the station file), as a station with a display "
                  "that offers its own stop button would run it.")
        proc = self.restart_module({"stop_transaction_on_reswipe": False}) \
            if self.restart_module is not None else None
        if proc is None:
            self.unexpected("the auth module could not be restarted with the new setting")
            return
        self.proc = proc
        self.show(f"auth-module restarted (pid {proc.pid}) and ready again")
        if not self.start_charging(1, "VALID_RFID_1", "EVSE 1 has the car"):
            return
        self.step("Card VALID_RFID_1 is swiped again while EVSE 1 charges.")
        cmd_start = len(self.evse(1).received)
        mark = self.swipe("VALID_RFID_1")
        msg = self.follow(
            "VALID_RFID_1", mark, "UsedToReauthorize",
            {"Processing": "the module sees the card that started this charge",
             "UsedToReauthorize": "the card belongs to this charge, which goes on; a display "
                                  "could now offer the driver a stop button"})
        if msg is None:
            return
        time.sleep(0.3)
        stops = [c for c, _ in list(self.evse(1).received)[cmd_start:] if c == "stop_transaction"]
        if stops:
            self.unexpected("EVSE 1 was told to stop the transaction anyway")
        else:
            self.show("EVSE 1 received no stop_transaction: still charging.")
        self.step("The driver unplugs to leave; that ends the transaction.")
        self.plug_out(1, "EVSE 1 is free again")


def _exit_text(proc: subprocess.Popen[bytes]) -> str:
    code = proc.returncode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _auth_text(args: dict[str, Any]) -> str:
    res = args.get("validation_result") or {}
    text = str(res.get("authorization_status"))
    if res.get("reservation_id") is not None:
        text += f" (reservation {res['reservation_id']})"
    return text


def _stop_text(args: dict[str, Any]) -> str:
    req = args.get("request") or {}
    by = ((req.get("id_tag") or {}).get("id_token") or {}).get("value")
    return f"(reason {req.get('reason')}" + (f", card {by})" if by else ")")


# ---------------------------------------------------------------------------- setting up


def _module_command() -> list[str]:
    script = Path(sys.executable).with_name("auth-module")
    if script.exists():
        return [str(script)]
    found = shutil.which("auth-module")
    if found:
        return [found]
    return [sys.executable, "-m", "auth_module.cli"]


def _tokens_file(given: str | None, station_path: Path) -> Path:
    if given:
        p = Path(given)
        if not p.is_file():
            raise DemoError(f"{given}: tokens file not found")
        return p
    for cand in (station_path.parent / "tokens.yaml", Path("config") / "tokens.yaml",
                 PROJECT_DIR / "config" / "tokens.yaml"):
        if cand.is_file():
            return cand
    raise DemoError(f"no tokens file beside {station_path} or in config/; pass --tokens")


def _check_tokens(path: Path) -> None:
    from simulators.validator import TokensFileError, load_tokens

    try:
        load_tokens(path)
    except TokensFileError as exc:
        raise DemoError(str(exc)) from None


def _configure_sim_logging(path: Path) -> Any:
    """The in-process simulators log to a file, so the terminal shows only the story."""
    import structlog

    fh = open(path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed at exit
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=fh),
        cache_logger_on_first_use=False,
    )
    return fh


def _check_station(path: Path) -> tuple[Any, int]:
    """The station's bus entries and connection timeout; DemoError if the demo can't use it."""
    from auth_module.station import StationError, load_station
    from simulators.launcher import read_station

    try:
        loaded = load_station(path)
        info = read_station(path)
    except StationError as exc:
        raise DemoError(str(exc)) from None
    problems = []
    if len(info.evse_managers) != 2:
        problems.append(f"connections.evse_manager: the demo needs exactly 2 EVSE managers "
                        f"(found {len(info.evse_managers)})")
    if not info.token_providers:
        problems.append("connections.token_provider: the demo needs a bus token provider "
                        "(module_id + implementation_id) to swipe cards")
    algorithm = getattr(loaded.config.selection_algorithm, "value",
                        loaded.config.selection_algorithm)
    if algorithm != "PlugEvents":
        problems.append(f"config.selection_algorithm: the demo needs PlugEvents "
                        f"(found {algorithm})")
    if problems:
        raise DemoError(f"{path}: {problems[0]}")
    return info, int(loaded.config.connection_timeout)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Play a scripted, narrated charging session: a broker, the auth module, "
                    "two simulated EVSEs, a card reader and a validator.",
    )
    p.add_argument("--config", default="config/demo.yaml", metavar="STATION.yaml",
                   help="the station file (default config/demo.yaml)")
    p.add_argument("--tokens", default=None, metavar="TOKENS.yaml",
                   help="cards the simulated validator knows (default: tokens.yaml beside the "
                        "station file, else config/tokens.yaml)")
    p.add_argument("--fast", action="store_true",
                   help="no pauses between the steps (for tests)")
    p.add_argument("--play", action="store_true",
                   help="no scenes: keep the station up to play with from the console page "
                        "(swipe a card, plug a car in, add cards) until Ctrl-C")
    return p


class _Run:
    """Everything started, so that it can all be stopped in order."""

    def __init__(self) -> None:
        self.choice: BrokerChoice | None = None
        self.owned: list[Any] = []  # brokers and temp dirs the demo made, in order
        self.station: Any = None
        self.observer_bus: Any = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.module_log: Any = None
        self.sim_log: Any = None
        self.demo: Demo | None = None
        self.module_id = "auth"
        self.module_ready = False

    def shutdown(self) -> bool:
        """Stop everything; True if the module exited 0 (or never ran)."""
        ok = True
        demo, bus = self.demo, self.observer_bus
        if demo is not None and demo.reservation_placed and bus is not None:
            try:
                bus.call(self.module_id, "reservation", "cancel_reservation",
                         {"reservation_id": RESERVATION_ID}, timeout=2.0)
                out(f"Cancelled the demo's reservation {RESERVATION_ID}.")
            except Exception:
                pass
        if self.proc is not None:
            sent = self.proc.poll() is None
            if sent:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    out("unexpected: the auth module did not stop within 10 s of SIGTERM; "
                        "killed it")
                    ok = False
            code = self.proc.returncode
            if ok:
                if code == 0 and sent:
                    out("The auth module stopped on SIGTERM with exit status 0.")
                elif sent and not self.module_ready and code == -signal.SIGTERM:
                    # SIGTERM while Python was still starting, before the module's handler
                    out("The auth module, still starting, was stopped with SIGTERM.")
                else:
                    when = "on SIGTERM" if sent else "before the end of the demo"
                    out(f"unexpected: the auth module ended {when} ({_exit_text(self.proc)}); "
                        f"see {Path(self.module_log.name).resolve()}")
                    ok = False
        if self.module_log is not None:
            self.module_log.close()
        if self.observer_bus is not None:
            self.observer_bus.stop()
        if self.station is not None:
            self.station.stop()
            out("The simulators stopped.")
        for thing in reversed(self.owned):
            if isinstance(thing, Path):
                shutil.rmtree(thing, ignore_errors=True)
            else:
                thing.close()
                out(f"The demo's mosquitto on {thing.host}:{thing.port} stopped.")
        self.owned.clear()
        if self.sim_log is not None:
            try:
                import structlog

                structlog.reset_defaults()
            finally:
                self.sim_log.close()
        return ok


def _run(args: argparse.Namespace, run: _Run) -> int:
    from auth_module.bus import BusClient

    station_path = Path(args.config)
    info, connection_timeout = _check_station(station_path)
    tokens = _tokens_file(args.tokens, station_path)
    _check_tokens(tokens)
    run.module_id = info.module_id
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    run.sim_log = _configure_sim_logging(STATE_DIR / "demo-sims.log")

    out("auth-demo: " + ("a station to play with" if args.play else "a scripted session")
        + " with the auth module, two simulated EVSEs, a card reader and a validator.")
    from simulators.demo_console import lines as console_lines
    from simulators.demo_console import prepare as prepare_console

    run.choice = choice = choose_broker(station_path, info.host, info.port, run.owned)
    if choice.station_path != station_path:
        info, _ = _check_station(choice.station_path)
    console = prepare_console(choice.station_path, STATE_DIR, play=args.play)
    for line in console_lines(console):
        out(line)
    out(choice.line)

    from simulators.launcher import start_station

    pause = 0.0 if args.fast else 1.0
    pace = 0.0 if args.fast else 1.0
    run.station = start_station(choice.station_path, tokens, pace=pace)
    known = len(run.station.validators[0].tokens()) if run.station.validators else 0
    out(f"Simulators: EVSE 1 ({info.evse_managers[0][0]}), EVSE 2 ({info.evse_managers[1][0]}), "
        f"card reader ({info.token_providers[0][0]})"
        + (f", validator ({info.token_validators[0][0]}, {known} cards from {tokens})"
           if info.token_validators else "")
        + f"; their log: {(STATE_DIR / 'demo-sims.log').resolve()}")

    bus = BusClient(module_id="auth_demo", host=info.host, port=info.port, prefix=info.prefix)
    run.observer_bus = bus
    observer = Observer(bus, info.module_id, info.evse_managers)
    bus.start()
    if not bus.wait_connected(DEADLINE_S) or not bus.wait_subscribed(DEADLINE_S):
        raise DemoError(f"cannot reach the MQTT broker at {info.host}:{info.port}")

    log_path = (STATE_DIR / "demo-module.log").resolve()
    run.module_log = open(log_path, "wb")  # noqa: SIM115 - closed in shutdown
    cmd = [*_module_command(), "--config", str(console.station_path)]
    seen = observer.ready_count
    started = time.monotonic()
    run.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=run.module_log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    out(f"Module: started auth-module --config {console.station_path} (pid {run.proc.pid}); "
        f"its log: {log_path}")
    if not observer.wait_ready(seen, READY_DEADLINE_S, lambda: run.proc.poll() is None):
        if run.proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise DemoError(f"the auth module ended ({_exit_text(run.proc)}) before it was "
                            f"ready: {' | '.join(tail) or '(no output)'}")
        raise DemoError(f"the auth module did not publish ready within {READY_DEADLINE_S:g} s "
                        f"(see {log_path})")
    run.module_ready = True
    out(f"Module: ready after {time.monotonic() - started:.1f} s (it asked both EVSE "
        f"managers get_evse and now handles cards).")

    # A reservation left by an interrupted earlier run would change the story: remove it.
    try:
        if bus.call(info.module_id, "reservation", "cancel_reservation",
                    {"reservation_id": RESERVATION_ID}, timeout=DEADLINE_S):
            out(f"Removed reservation {RESERVATION_ID}, left over from an earlier demo run.")
        for n in (1, 2):
            state = bus.call(info.module_id, "reservation", "exists_reservation",
                             {"request": {"id_token": "auth-demo-probe", "evse_id": n}},
                             timeout=DEADLINE_S)
            if state != "NotReserved":
                out(f"Note: EVSE {n} is reserved ({state}) by an earlier reservation; "
                    "some scenes may not go as described.")
    except Exception as exc:
        out(f"Note: could not check for left-over reservations ({type(exc).__name__}).")

    if args.play:
        return _play(run, console.url)
    if not args.fast and sys.stdin.isatty():
        out(f"To watch the scenes live, open {console.url} now (viewer key above); "
            f"then press Enter.")
        try:
            input()
        except EOFError:
            pass
    out()
    out("How to read it: [n.m] is a step the demo plays; 'auth -> ...' is what the auth module "
        "published or sent (token_validation_status, reservation_update, commands to the "
        "EVSEs); 'EVSE n -> ...' are the session events that EVSE reported.")
    def restart_module(overrides: dict[str, Any]) -> subprocess.Popen[bytes] | None:
        """Stop the module (it must exit 0 on SIGTERM) and start it again from a temporary
        copy of the station file with ``overrides`` in its config section."""
        assert run.proc is not None
        run.proc.send_signal(signal.SIGTERM)
        try:
            if run.proc.wait(timeout=10) != 0:
                out(f"unexpected: the auth module ended with {_exit_text(run.proc)} on SIGTERM")
                return None
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait()
            return None
        copy = _config_copy(choice.station_path, overrides, run.owned)
        seen = observer.ready_count
        run.proc = subprocess.Popen([*_module_command(), "--config", str(copy)],
                                    stdin=subprocess.DEVNULL, stdout=run.module_log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        proc = run.proc
        if not observer.wait_ready(seen, READY_DEADLINE_S, lambda: proc.poll() is None):
            return None
        return proc

    run.demo = demo = Demo(run.station, observer, run.proc, info.module_id,
                           connection_timeout, pause, pace, log_path, restart_module)
    demo.run()
    out()
    if demo.unexpected_count:
        out(f"Done, with {demo.unexpected_count} unexpected outcome(s) (see above and "
            f"{log_path}).")
    else:
        out("Done: every scene went as expected.")
    return 1 if demo.unexpected_count else 0


def _play(run: _Run, url: str) -> int:
    """Keep the station up until Ctrl-C; the console page drives the simulators."""
    cards = sorted(e.id_token for e in run.station.validators[0].tokens().values()) \
        if run.station.validators else []
    out()
    out(f"Playing: open {url} with the admin key above. Plug a car in and swipe a card with "
        f"the buttons on the page" + (f"; cards the validator knows: {', '.join(cards)}"
                                      if cards else "") + ". Ctrl-C ends the demo.")
    assert run.proc is not None
    while run.proc.poll() is None:
        time.sleep(0.5)
    raise DemoError(f"the auth module ended ({_exit_text(run.proc)})")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def on_signal(signum: int, frame: Any) -> None:
        raise Interrupted()

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    run = _Run()
    status = 1
    try:
        status = _run(args, run)
    except Interrupted:
        out()
        out("Interrupted: shutting down.")
        status = 130
    except DemoError as exc:
        err(f"error: {exc}")
        status = 2 if run.choice is None else 1
    except Exception as exc:  # never a traceback for the user
        first = str(exc).strip().splitlines()
        err(f"error: {type(exc).__name__}" + (f": {first[0]}" if first else ""))
        status = 1
    finally:
        # A second Ctrl-C must not break the shutdown half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if not run.shutdown() and status == 0:
                status = 1
        except Exception as exc:
            err(f"error while shutting down: {type(exc).__name__}: {exc}")
            status = status or 1
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
