"""A simulated EVerest ``EvseManager`` on the MQTT bus.

It provides the ``evse_manager`` interface commands that the auth module uses (CONTRACT.md
§5) on impl ``evse`` and publishes ``session_event`` the way EVerest's EvseManager does, so
the auth module can be run and tested without a charger. A second impl, ``sim``, lets tests
and the demo drive the "hardware" over MQTT: plug a car in, pull it out, raise a fault, ...

The session is a real state machine (``transitions``)::

    idle --plug--> plugged --authorize--> charging --stop--> finished --unplug--> idle
    idle --authorize--> authorized --plug--> charging        (authorize first, then plug)
    authorized --withdraw--> idle
    charging --unplug--> idle                                 (TransactionFinished EVDisconnected)

``enabled``, ``faulted`` and the reservation are flags beside it, because they are
orthogonal to whether a car is plugged in: a fault raises/clears ``evse_manager/Inoperative``
on impl ``evse`` and pauses charging, ``disable`` publishes ``Disabled`` and refuses new
authorizations, ``reserve`` is only accepted when idle, enabled and not faulted.

Everything is guarded by one lock; events are published while holding it, so their order on
the wire is the order of the state changes.
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from transitions import Machine

from auth_module.schema import InterfaceSchemas
from auth_module.logs import mask
from auth_module.text import format_utc
from auth_module.types import (
    AuthorizationStatus,
    ProvidedIdToken,
    SessionEvent,
    SessionEventEnum,
    StopTransactionReason,
    StopTransactionRequest,
    ValidationResult,
    to_wire,
)

__all__ = ["EvseManagerSim", "resolve_bus"]

INOPERATIVE = "evse_manager/Inoperative"

STATES = ["idle", "authorized", "plugged", "charging", "finished"]


def _token_value(token: dict[str, Any] | None) -> str | None:
    if not token:
        return None
    return (token.get("id_token") or {}).get("value")


def resolve_bus(bus: Any, module_id: str) -> tuple[Any, bool]:
    """``bus`` is a BusClient (used as is) or a factory ``f(module_id) -> BusClient``.

    Returns the client and whether this simulator owns it (and so starts and stops it).
    """
    if hasattr(bus, "provide_command") and hasattr(bus, "publish_var"):
        return bus, False
    if callable(bus):
        return bus(module_id), True
    raise TypeError("bus must be a BusClient or a callable module_id -> BusClient")


class _Session:
    """The model object the ``transitions`` machine drives (kept apart from the public API)."""

    state: str


class EvseManagerSim:
    """A simulated EvseManager for one EVSE.

    ``bus`` is a ``BusClient`` whose module id is ``module_id`` (the caller starts and stops
    it), or a factory ``f(module_id) -> BusClient`` (the simulator then owns the client:
    ``start()`` starts it, ``stop()`` stops it).
    """

    def __init__(
        self,
        bus: Any,
        module_id: str,
        impl_id: str = "evse",
        evse_id: int = 1,
        connectors: Iterable[tuple[int, str | None]] = ((1, "cType2"),),
        *,
        sim_impl_id: str = "sim",
        pace_s: float = 0.0,
        power_w: float = 11000.0,
        initial_energy_wh: float = 0.0,
        logger: Any = None,
    ) -> None:
        self.module_id = module_id
        self.impl_id = impl_id
        self.sim_impl_id = sim_impl_id
        self.evse_id = int(evse_id)
        self.connectors = [(int(cid), ctype) for cid, ctype in connectors]
        if not self.connectors:
            raise ValueError("an EVSE needs at least one connector")
        self.connector_id = self.connectors[0][0]
        self.pace_s = float(pace_s)
        self.power_w = float(power_w)
        self.bus, self._owns_bus = resolve_bus(bus, module_id)
        self.log = (logger or structlog.get_logger("sim.evse_manager")).bind(
            evse=self.evse_id, module=module_id
        )

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        #: every command received on impl ``evse``, in order: ``(cmd, args)``
        self.received: list[tuple[str, dict[str, Any]]] = []
        #: every session event published, in order (the wire dicts)
        self.published: list[dict[str, Any]] = []

        self._enabled = True
        self._faulted = False
        self._reservation: int | None = None
        self._auth_token: dict[str, Any] | None = None
        self._auth_result: dict[str, Any] | None = None
        self._session_uuid: str | None = None
        self._tx: dict[str, Any] | None = None
        self._tx_counter = 0
        self._charging_active = False
        self._energy_wh = float(initial_energy_wh)
        self._charging_since: float | None = None
        self._timers: list[threading.Timer] = []
        self._started = False

        self._session = _Session()
        self._machine = Machine(
            model=self._session,
            states=STATES,
            initial="idle",
            auto_transitions=False,
            send_event=True,
            after_state_change=self._log_state_change,
            transitions=[
                {"trigger": "plug", "source": "idle", "dest": "plugged",
                 "after": [self._on_session_started, self._on_auth_required]},
                {"trigger": "plug", "source": "authorized", "dest": "charging",
                 "after": [self._on_session_started, self._on_transaction_started]},
                {"trigger": "authorize", "source": "idle", "dest": "authorized",
                 "after": self._on_authorized},
                {"trigger": "authorize", "source": "authorized", "dest": None,
                 "after": self._on_authorized},
                {"trigger": "authorize", "source": "plugged", "dest": "charging",
                 "after": [self._on_authorized, self._on_transaction_started]},
                {"trigger": "withdraw", "source": "authorized", "dest": "idle",
                 "after": self._on_deauthorized},
                {"trigger": "withdraw", "source": "plugged", "dest": None,
                 "after": self._on_deauthorized},
                {"trigger": "stop_tx", "source": "charging", "dest": "finished",
                 "after": self._on_transaction_finished},
                {"trigger": "unplug", "source": "charging", "dest": "idle",
                 "before": self._on_transaction_finished,
                 "after": self._on_session_finished},
                {"trigger": "unplug", "source": ["plugged", "finished"], "dest": "idle",
                 "after": self._on_session_finished},
            ],
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self, wait_connected: float | None = 5.0) -> EvseManagerSim:
        """Register the commands; start the bus if this simulator owns it."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        b = self.bus
        i = self.impl_id
        # The interface's own schemas check every argument, as the module's commands are.
        schemas = InterfaceSchemas.load()
        b.provide_command(i, "get_evse", self._cmd("get_evse", self._h_get_evse),
                          validate=schemas.args_checker("evse_manager", "get_evse"))
        b.provide_command(i, "authorize_response",
                          self._cmd("authorize_response", self._h_authorize_response),
                          validate=schemas.args_checker("evse_manager", "authorize_response"))
        b.provide_command(i, "withdraw_authorization",
                          self._cmd("withdraw_authorization", self._h_withdraw),
                          validate=schemas.args_checker("evse_manager", "withdraw_authorization"))
        b.provide_command(i, "reserve", self._cmd("reserve", self._h_reserve),
                          validate=schemas.args_checker("evse_manager", "reserve"))
        b.provide_command(i, "cancel_reservation",
                          self._cmd("cancel_reservation", self._h_cancel_reservation),
                          validate=schemas.args_checker("evse_manager", "cancel_reservation"))
        b.provide_command(i, "stop_transaction",
                          self._cmd("stop_transaction", self._h_stop_transaction),
                          validate=schemas.args_checker("evse_manager", "stop_transaction"))
        b.provide_command(i, "enable_disable",
                          self._cmd("enable_disable", self._h_enable_disable))
        s = self.sim_impl_id
        b.provide_command(s, "plug_in", lambda a: self.plug_in())
        b.provide_command(s, "plug_out", lambda a: self.plug_out())
        b.provide_command(s, "fault", lambda a: self.fault(str((a or {}).get("message")
                                                               or "simulated fault")))
        b.provide_command(s, "clear_fault", lambda a: self.clear_fault())
        b.provide_command(s, "enable", lambda a: self.enable())
        b.provide_command(s, "disable", lambda a: self.disable())
        b.provide_command(s, "state", lambda a: self.state())
        b.provide_command(s, "history", lambda a: self.history())
        if self._owns_bus:
            b.start()
            if wait_connected and not b.wait_connected(timeout=wait_connected):
                self.log.warning(f"evse {self.evse_id}: not connected to the broker yet")
        b.publish_ready()
        self.log.info(f"evse {self.evse_id} ({self.module_id}) ready: idle")
        return self

    def stop(self) -> None:
        with self._lock:
            timers, self._timers = self._timers, []
        for t in timers:
            t.cancel()
        if self._owns_bus:
            self.bus.stop()

    def __enter__(self) -> EvseManagerSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ simulation control

    @property
    def session_state(self) -> str:
        return self._session.state

    def plug_in(self) -> bool:
        """A car is plugged in. False if one already was."""
        with self._lock:
            if not self._session.may_plug():
                self.log.info(f"evse {self.evse_id}: plug_in ignored, already plugged "
                              f"({self._session.state})")
                return False
            self._session.plug()
            return True

    def plug_out(self) -> bool:
        """The car is pulled out (finishing a running transaction). False if none was in."""
        with self._lock:
            if not self._session.may_unplug():
                self.log.info(f"evse {self.evse_id}: plug_out ignored, nothing plugged "
                              f"({self._session.state})")
                return False
            self._session.unplug(reason=StopTransactionReason.EVDisconnected.value, id_tag=None)
            return True

    def fault(self, message: str = "simulated fault") -> bool:
        """Raise ``evse_manager/Inoperative``. False if already faulted."""
        with self._lock:
            if self._faulted:
                return False
            self._faulted = True
            self.bus.raise_error(self.impl_id, INOPERATIVE, message)
            self.log.info(f"evse {self.evse_id}: faulted ({message}), Inoperative raised")
            self._pause_charging("Error")
            self._changed.notify_all()
            return True

    def clear_fault(self) -> bool:
        """Clear ``evse_manager/Inoperative``. False if not faulted."""
        with self._lock:
            if not self._faulted:
                return False
            self._faulted = False
            self.bus.clear_error(self.impl_id, INOPERATIVE, "fault cleared")
            self.log.info(f"evse {self.evse_id}: fault cleared, Inoperative cleared")
            self._resume_charging()
            self._changed.notify_all()
            return True

    def enable(self) -> bool:
        """Enable the EVSE (publishes ``Enabled``). False if it already was."""
        with self._lock:
            if self._enabled:
                return False
            self._enabled = True
            self._publish(SessionEventEnum.Enabled)
            self.log.info(f"evse {self.evse_id}: enabled")
            self._resume_charging()
            return True

    def disable(self) -> bool:
        """Disable the EVSE (publishes ``Disabled``). False if it already was."""
        with self._lock:
            if not self._enabled:
                return False
            self._enabled = False
            self._publish(SessionEventEnum.Disabled)
            self.log.info(f"evse {self.evse_id}: disabled")
            self._pause_charging("UserPause")
            return True

    def state(self) -> dict[str, Any]:
        """A snapshot: ``{"state", "authorized", "transaction", "reserved", ...}``."""
        with self._lock:
            st = self._session.state
            return {
                "state": st,
                "authorized": self._auth_token is not None or st == "charging",
                "transaction": self._tx is not None,
                "reserved": self._reservation,
                "plugged": st in ("plugged", "charging", "finished"),
                "enabled": self._enabled,
                "faulted": self._faulted,
                "charging": self._charging_active,
                "evse_id": self.evse_id,
                "energy_Wh": round(self._energy_now(), 3),
            }

    def history(self) -> list[dict[str, Any]]:
        """The commands received on impl ``evse``, as ``[{"cmd", "args"}]``."""
        with self._lock:
            return [{"cmd": c, "args": a} for c, a in self.received]

    # ------------------------------------------------------------------ test helpers

    def wait_for_command(self, cmd: str, timeout: float = 5.0, *, start: int = 0
                         ) -> dict[str, Any] | None:
        """The args of the first ``cmd`` received at index >= ``start``; None on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for c, a in self.received[start:]:
                    if c == cmd:
                        return a
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def wait_for_event(self, event: str, timeout: float = 5.0, *, start: int = 0
                       ) -> dict[str, Any] | None:
        """The first published session event ``event`` at index >= ``start``; None on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for e in self.published[start:]:
                    if e.get("event") == event:
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    # ------------------------------------------------------------------ command handlers

    def _cmd(self, name: str, fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict], Any]:
        def handler(args: dict[str, Any]) -> Any:
            with self._lock:
                self.received.append((name, args if isinstance(args, dict) else {}))
                self._changed.notify_all()
                return fn(args or {})

        return handler

    def _h_get_evse(self, args: dict[str, Any]) -> dict[str, Any]:
        conns = []
        for cid, ctype in self.connectors:
            c: dict[str, Any] = {"id": cid}
            if ctype:
                c["type"] = ctype
            conns.append(c)
        return {"id": self.evse_id, "connectors": conns}

    def _h_authorize_response(self, args: dict[str, Any]) -> None:
        token = to_wire(ProvidedIdToken.model_validate(args["provided_token"]))
        result = to_wire(ValidationResult.model_validate(args["validation_result"]))
        status = result.get("authorization_status")
        value = mask(_token_value(token) or "")
        if status != AuthorizationStatus.Accepted:
            self.log.info(f"evse {self.evse_id}: authorize_response {status} for {value}, "
                          "nothing to do")
            return None
        if not self._enabled:
            self.log.info(f"evse {self.evse_id}: authorization for {value} ignored, disabled")
            return None
        if not self._session.may_authorize():
            self.log.info(f"evse {self.evse_id}: authorization for {value} ignored in state "
                          f"{self._session.state}")
            return None
        self._session.authorize(token=token, result=result)
        return None

    def _h_withdraw(self, args: dict[str, Any]) -> None:
        if self._session.may_withdraw():
            self._session.withdraw()
        else:
            self.log.info(f"evse {self.evse_id}: withdraw_authorization with nothing to "
                          f"withdraw ({self._session.state})")
        return None

    def _h_reserve(self, args: dict[str, Any]) -> bool:
        rid = int(args["reservation_id"])
        why = None
        if self._faulted:
            why = "faulted"
        elif not self._enabled:
            why = "disabled"
        elif self._session.state != "idle":
            why = f"occupied ({self._session.state})"
        elif self._reservation is not None and self._reservation != rid:
            why = f"already reserved ({self._reservation})"
        if why:
            self.log.info(f"evse {self.evse_id}: reservation {rid} refused: {why}")
            return False
        if self._reservation == rid:
            return True
        self._reservation = rid
        self._publish(SessionEventEnum.ReservationStart)
        self.log.info(f"evse {self.evse_id}: reserved (reservation {rid})")
        return True

    def _h_cancel_reservation(self, args: dict[str, Any]) -> None:
        if self._reservation is None:
            return None
        rid, self._reservation = self._reservation, None
        self._publish(SessionEventEnum.ReservationEnd)
        self.log.info(f"evse {self.evse_id}: reservation {rid} ended")
        return None

    def _h_stop_transaction(self, args: dict[str, Any]) -> bool:
        req = StopTransactionRequest.model_validate(args["request"])
        if not self._session.may_stop_tx():
            self.log.info(f"evse {self.evse_id}: stop_transaction ({req.reason}) but no "
                          f"transaction ({self._session.state})")
            return False
        id_tag = to_wire(req.id_tag) if req.id_tag is not None else None
        self._session.stop_tx(reason=req.reason.value, id_tag=id_tag)
        return True

    def _h_enable_disable(self, args: dict[str, Any]) -> bool:
        source = args.get("cmd_source") or {}
        want = source.get("enable_state", "Enable")
        if want == "Disable":
            self.disable()
        elif want == "Enable":
            self.enable()
        return self._enabled

    # ------------------------------------------------------------------ transition callbacks

    def _log_state_change(self, ev: Any) -> None:
        src = ev.transition.source
        dst = ev.transition.dest or src
        token = self._auth_token or (self._tx or {}).get("id_tag") or ev.kwargs.get("token")
        extra = ""
        if ev.event.name == "stop_tx" or (ev.event.name == "unplug" and src == "charging"):
            extra = f", reason {ev.kwargs.get('reason')}"
        who = f" (token {mask(_token_value(token) or '')})" if token else ""
        arrow = f"{src} -> {dst}" if src != dst else f"{src} (stays)"
        self.log.info(f"evse {self.evse_id}: {ev.event.name}: {arrow}{who}{extra}")

    def _on_session_started(self, ev: Any) -> None:
        if self._session_uuid is None:
            self._session_uuid = str(uuidlib.uuid4())
        started: dict[str, Any] = {"reason": "EVConnected", "meter_value": self._meter()}
        if self._reservation is not None and self._reservation >= 0:
            started["reservation_id"] = self._reservation
        self._publish(SessionEventEnum.SessionStarted, session_started=started)

    def _on_auth_required(self, ev: Any) -> None:
        self._publish(SessionEventEnum.AuthRequired)

    def _on_authorized(self, ev: Any) -> None:
        self._auth_token = ev.kwargs["token"]
        self._auth_result = ev.kwargs["result"]
        if self._session_uuid is None:
            self._session_uuid = str(uuidlib.uuid4())
        self._publish(SessionEventEnum.Authorized,
                      authorization_event={"meter_value": self._meter()})

    def _on_deauthorized(self, ev: Any) -> None:
        self._auth_token = None
        self._auth_result = None
        self._publish(SessionEventEnum.Deauthorized,
                      authorization_event={"meter_value": self._meter()})
        if self._session.state == "idle":
            self._session_uuid = None

    def _on_transaction_started(self, ev: Any) -> None:
        token = self._auth_token or {}
        result = self._auth_result or {}
        self._tx_counter += 1
        reservation_id = result.get("reservation_id")
        if reservation_id is None and self._reservation is not None and self._reservation >= 0:
            reservation_id = self._reservation
        self._reservation = None  # a reservation is used up by the transaction it starts
        self._tx = {"n": self._tx_counter, "id_tag": token, "reservation_id": reservation_id}
        self._auth_token = None
        self._auth_result = None
        started: dict[str, Any] = {"id_tag": token, "meter_value": self._meter()}
        if reservation_id is not None:
            started["reservation_id"] = reservation_id
        self._publish(SessionEventEnum.TransactionStarted, transaction_started=started)
        self._publish(SessionEventEnum.PrepareCharging)
        if self.pace_s > 0:
            self._timers = [t for t in self._timers if t.is_alive()]
            n = self._tx_counter
            t = threading.Timer(self.pace_s, self._paced_charging_start, args=(n,))
            t.daemon = True
            self._timers.append(t)
            t.start()
        else:
            self._resume_charging()

    def _paced_charging_start(self, tx_number: int) -> None:
        with self._lock:
            if self._tx is not None and self._tx["n"] == tx_number:
                self._resume_charging()

    def _on_transaction_finished(self, ev: Any) -> None:
        reason = ev.kwargs.get("reason") or StopTransactionReason.Other.value
        id_tag = ev.kwargs.get("id_tag")
        if self._charging_active or ev.event.name == "stop_tx":
            self._stop_energy()
            if ev.event.name == "stop_tx":
                self._publish(SessionEventEnum.StoppingCharging)
            self._publish(SessionEventEnum.ChargingFinished,
                          charging_state_changed_event={"meter_value": self._meter()})
        finished: dict[str, Any] = {"meter_value": self._meter(), "reason": reason}
        if id_tag:
            finished["id_tag"] = id_tag
        self._publish(SessionEventEnum.TransactionFinished, transaction_finished=finished)
        self._tx = None
        self._charging_active = False
        self._auth_token = None
        self._auth_result = None

    def _on_session_finished(self, ev: Any) -> None:
        self._publish(SessionEventEnum.SessionFinished,
                      session_finished={"meter_value": self._meter()})
        self._session_uuid = None
        self._auth_token = None
        self._auth_result = None

    # ------------------------------------------------------------------ charging & meter

    def _resume_charging(self) -> None:
        """Start (or resume) energy transfer if a transaction runs and nothing prevents it."""
        if self._tx is None or self._charging_active:
            return
        if self._faulted or not self._enabled:
            self._publish(SessionEventEnum.ChargingPausedEVSE,
                          charging_paused_evse={"reasons": ["Error" if self._faulted
                                                            else "UserPause"]})
            return
        self._charging_active = True
        self._charging_since = time.monotonic()
        self._publish(SessionEventEnum.ChargingStarted,
                      charging_state_changed_event={"meter_value": self._meter()})
        self.log.info(f"evse {self.evse_id}: charging")

    def _pause_charging(self, reason: str) -> None:
        if self._tx is None or not self._charging_active:
            return
        self._stop_energy()
        self._charging_active = False
        self._publish(SessionEventEnum.ChargingPausedEVSE,
                      charging_paused_evse={"reasons": [reason]})
        self.log.info(f"evse {self.evse_id}: charging paused ({reason})")

    def _stop_energy(self) -> None:
        self._energy_wh = self._energy_now()
        self._charging_since = None

    def _energy_now(self) -> float:
        if self._charging_since is None:
            return self._energy_wh
        return self._energy_wh + self.power_w * (time.monotonic() - self._charging_since) / 3600.0

    def _meter(self) -> dict[str, Any]:
        return {
            "timestamp": format_utc(),
            "energy_Wh_import": {"total": round(self._energy_now(), 3)},
        }

    # ------------------------------------------------------------------ publishing

    def _publish(self, event: SessionEventEnum, **extra: Any) -> dict[str, Any]:
        """Publish one ``session_event`` (caller holds the lock)."""
        ev = SessionEvent(
            uuid=self._session_uuid or str(uuidlib.uuid4()),
            event=event,
            timestamp=format_utc(),
            connector_id=self.connector_id,
            **extra,
        )
        wire = to_wire(ev)
        self.published.append(wire)
        self._changed.notify_all()
        self.bus.publish_var(self.impl_id, "session_event", wire)
        return wire
